from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
version = {}
exec((here / "fastvision" / "_version.py").read_text(), version)

setup(
    name="fastvision",
    version=version["__version__"],
    description="fastai-style high-level vision training for PyTorch: faster, safer, easier to read",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["fastvision", "fastvision.*"]),
    install_requires=[
        "torch>=2.4,<=2.14.1",
        "torchvision>=0.19,<=0.29.1",
        "fastcore>=1.7",
        "fastprogress>=1.0.3",
        "matplotlib>=3.7",
        "numpy>=1.24",
        "pillow>=10.0",
        "safetensors>=0.4",
    ],
    extras_require={
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "nbformat>=5.9", "nbclient>=0.10",
                "ipykernel>=6.29", "pandas>=2.0", "mkdocs>=1.6", "timm>=1.0",
                "onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5", "mypy>=1.10"],
        "docs": ["mkdocs>=1.6"],
        "tensorboard": ["tensorboard>=2.15"],
        "timm": ["timm>=1.0"],
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.5"],  # export_onnx; onnxscript: dynamo=True
    },
    entry_points={"console_scripts": ["fastvision=fastvision.cli:main"]},
)
