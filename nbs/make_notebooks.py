"""Write the notebooks in nbs/ from the cell sources below (run it after editing; CI executes the .ipynb).

The docs site renders the committed notebooks, outputs included, as its Tutorials section
(docs/scripts/notebooks.py); links in Markdown cells point into `../docs/`, which the site rewrites.
"""

from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent

SMALL = (
    "import os\n"
    "SMALL = bool(os.environ.get('CI') or os.environ.get('FASTVISION_NB_SMALL'))  # small settings in CI\n"
)

PETS = [
    "md:# 01 · The Pets chapter on fashion-pets\n\nfastbook chapter 5, unchanged, on an Oxford-Pets-shaped folder "
    "of JPEG photos: [`make_fashion_pets`](../docs/api/data.fashion_pets.md#make_fashion_pets) builds it from the real "
    "Fashion-MNIST (the same as `fastvision make-fashion-pets fashion-pets` on the command line). "
    "In CI a small generated folder stands in.",
    SMALL + "from fastvision.all import *\n"
    "path = Path(os.environ.get('FASHION_PETS', 'fashion-pets'))\n"
    "if SMALL:\n"
    "    path = make_image_folder('nb-pets', classes=('Bag', 'Coat', 'sandal', 'trouser'), n_per_class=10, layout='name')\n"
    "elif not path.exists():\n"
    "    make_fashion_pets(path)  # 7,390 Pets-like JPEGs from the real Fashion-MNIST, about a minute, once\n"
    "size, presize, bs = (64, 96, 8) if SMALL else (224, 460, 64)\n"
    "len(get_image_files(path))",
    "pets = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,\n"
    "                 splitter=RandomSplitter(seed=42),\n"
    "                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'),\n"
    "                 item_tfms=Resize(presize), batch_tfms=aug_transforms(size=size, min_scale=0.75))\n"
    "dls = pets.dataloaders(path, bs=bs)\n"
    "dls.show_batch(nrows=2, ncols=4);",
    "md:`show_batch(unique=True)` shows one image under many augmentations (one resample each).",
    "dls.show_batch(unique=True, nrows=2, ncols=4);",
    "md:`summary` without `Resize`: images of different sizes cannot be collated, and the summary says which.",
    "no_resize = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,\n"
    "                      get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'))\n"
    "try:\n"
    "    no_resize.summary(path)\n"
    "except RuntimeError as e:\n"
    "    print('re-raised:', type(e).__name__)",
    "pets.summary(path)",
    "learn = vision_learner(dls, resnet34, metrics=error_rate, pretrained=False)  # offline: no ImageNet weights\n"
    "learn.lr_find()",
    "learn.fine_tune(1 if SMALL else 2, base_lr=3e-3)",
    "md:Discriminative learning rates: `slice(lo, hi)` spreads geometrically over the 3 parameter groups.",
    "learn.unfreeze()\nlearn.to_bf16()  # bf16 autocast on the CPU; to_fp16() on CUDA\n"
    "learn.fit_one_cycle(1 if SMALL else 6, lr_max=slice(1e-5, 1e-3))\nlearn.to_fp32();",
    "interp = ClassificationInterpretation.from_learner(learn)\ninterp.plot_confusion_matrix(figsize=(5, 5))\n"
    "interp.most_confused(min_val=1)[:5]",
    "interp.plot_top_losses(4, nrows=1);",
    "learn.export('pets_model')\ninf = load_learner('pets_model')\ninf.predict(get_image_files(path)[0])",
]

FMNIST = [
    "md:# 02 · Fashion-MNIST, the plain-PyTorch tutorial flow\n\nThe data as tensors, a linear baseline, a "
    "non-linear model and a TinyVGG CNN, each trained through `Learner`, then compared.",
    SMALL + "import time, torch\nfrom torch import nn\nfrom fastvision.all import *\n"
    "n_train, n_test, epochs = (2000, 500, 1) if SMALL else (None, None, 3)\n"
    "train_ds, test_ds = fashion_mnist_datasets(n_train, n_test)\n"
    "tfms = [IntToFloatTensor()]\n"
    "dls = DataLoaders.from_dsets(train_ds, test_ds, bs=32, after_batch=tfms)\n"
    "xb, yb = dls.one_batch(); xb.shape, yb[:8], dls.vocab",
    "def train(model, lr=0.1):\n"
    "    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=torch.optim.SGD, metrics=accuracy)\n"
    "    t = time.time(); learn.fit(epochs, lr)\n"
    "    loss, acc = learn.validate()\n"
    "    return learn, {'model': type(model).__name__, 'loss': round(loss, 4), 'accuracy': round(acc, 4),\n"
    "                   'seconds': round(time.time() - t, 1)}\n"
    "results = []",
    "torch.manual_seed(42)\nlinear = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
    "_, r = train(linear); results.append(r); r",
    "torch.manual_seed(42)\nmlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU())\n"
    "_, r = train(mlp); results.append(r); r",
    "torch.manual_seed(42)\ncnn_learn, r = train(TinyVGG(n_in=1, n_out=10, hidden=10)); results.append(r); r",
    "md:The comparison table.",
    "print(f\"{'model':<12}{'loss':>8}{'accuracy':>10}{'seconds':>9}\")\n"
    "for r in results:\n    print(f\"{r['model']:<12}{r['loss']:>8}{r['accuracy']:>10}{r['seconds']:>9}\")",
    "md:Predictions: green when right, red when wrong.",
    "cnn_learn.show_results(max_n=9);",
    "interp = ClassificationInterpretation.from_learner(cnn_learn)\ninterp.plot_confusion_matrix(figsize=(6, 6));",
    "md:Save and load the weights (state dicts, written atomically, read with `weights_only=True`).",
    "cnn_learn.save('tinyvgg')\nfresh, _ = Learner(dls, TinyVGG(n_in=1, n_out=10, hidden=10), loss_func=nn.CrossEntropyLoss()), None\n"
    "fresh.load('tinyvgg')\n"
    "assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(), cnn_learn.model.state_dict().values()))\n"
    "fresh.validate()",
]

CALLBACKS = [
    "md:# 03 · Callbacks: checkpoints, early stopping, reduce-lr-on-plateau, CSV and TensorBoard logging",
    SMALL + "from fastvision.all import *\nimport torch\nfrom torch import nn\n"
    "x, y = make_tensor_data(n=256 if SMALL else 2048, n_classes=3)\n"
    "dls = DataLoaders.from_dsets(torch.utils.data.TensorDataset(x[:200], y[:200]), torch.utils.data.TensorDataset(x[200:], y[200:]), bs=32)\n"
    "def model():\n    torch.manual_seed(0)\n"
    "    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))",
    "learn = Learner(dls, model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=CSVLogger())\n"
    "learn.fit_one_cycle(4, 1e-2, cbs=SaveModelCallback(monitor='accuracy'))  # fit's cbs last for this fit only\n"
    "learn.csv_logger.read_log()",
    "md:A monitor name that is not recorded fails at `fit` start, listing the names that are.",
    "try:\n    learn.fit(1, cbs=EarlyStoppingCallback(monitor='val_loss'))\nexcept ValueError as e:\n    print(e)",
    "learn = Learner(dls, model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)\n"
    "learn.fit(8, 5e-2, cbs=[EarlyStoppingCallback(patience=2, restore_best_weights=True), ReduceLROnPlateau(patience=1, factor=2)])\n"
    "learn.opt.param_groups[0]['lr']",
    "try:\n    import torch.utils.tensorboard  # noqa: F401\n"
    "    learn.fit(1, cbs=TensorBoardCallback(log_dir='runs/nb'))\nexcept ImportError as e:\n    print(e)",
]


def build(cells, name):
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbf.v4.new_code_cell(c) for c in cells
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: rewriting a notebook changes only what changed
        cell.id = f"{name[:2]}-{i:02d}"
    nbf.write(nb, HERE / name)


if __name__ == "__main__":
    build(PETS, "01_pets.ipynb")
    build(FMNIST, "02_fashion_mnist.ipynb")
    build(CALLBACKS, "03_callbacks.ipynb")
