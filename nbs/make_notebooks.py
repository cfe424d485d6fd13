"""Write the notebooks in nbs/ from the cell sources below, and execute them on the real data.

    python nbs/make_notebooks.py                      # write the cells only (outputs empty: not for a commit)
    python nbs/make_notebooks.py --execute            # write and execute all five, with their outputs
    python nbs/make_notebooks.py --execute 04 05      # only the notebooks whose names start so

`--execute` runs each notebook with nbclient in a fresh temporary working directory (whatever a notebook
writes, exports and checkpoints included, is deleted afterwards, nothing lands in nbs/), with the real
settings (not FASTVISION_NB_SMALL), on the real Fashion-MNIST and on the fashion-pets folder that
`fastvision make-fashion-pets` writes to /tmp/nb-fashion-pets (the FASHION_PETS variable; made once).
Figures are stored at 72 dpi. fastprogress draws HTML progress bars and an HTML results table in a
notebook; the stored output keeps only the table, written as the plain text lines `fit` prints outside a
notebook (one per epoch), so the committed files stay small and read well in a diff.

CI executes the committed notebooks again with small settings and checks that they were committed
executed (tests/test_notebooks.py). The docs site renders the committed notebooks, outputs included, as
its Tutorials section (docs/scripts/notebooks.py); links in Markdown cells point into `../docs/`, which
the site rewrites.
"""

from __future__ import annotations

import argparse
import html.parser
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).parent
FASHION_PETS = Path(tempfile.gettempdir()) / "nb-fashion-pets"

SMALL = (
    "import os\n"
    "SMALL = bool(os.environ.get('CI') or os.environ.get('FASTVISION_NB_SMALL'))  # small settings in CI\n"
)

PETS = [
    "md:# 01 · The Pets chapter on fashion-pets\n\n"
    "fastbook chapter 5 on an Oxford-Pets-shaped folder of JPEG photos: "
    "[`make_fashion_pets`](../docs/api/data.fashion_pets.md#make_fashion_pets) builds it from the real "
    "Fashion-MNIST (the same as `fastvision make-fashion-pets DIR` on the command line): photos of 250-500 px "
    "a side named `<label>_<n>.jpg`, so the chapter's `RegexLabeller` labels them. The weights start "
    "random (`pretrained=False`: nothing is downloaded), so after a few epochs on a CPU the error rate stays "
    "far above the chapter's (which starts from ImageNet weights); the flow, its tables and plots are the "
    "point here.\n\n"
    "**Settings.** The chapter's own settings (resnet34, `Resize(460)` then 224 px crops, all 7,390 images, "
    "`fine_tune(2)` then 6 more epochs) take hours on a CPU, so the first cell picks them by device:\n\n"
    "| | on a GPU (`torch.cuda.is_available()`) | on a CPU (the saved outputs: 2 cores shared with other jobs, 14 minutes) "
    "| in CI (`FASTVISION_NB_SMALL=1`) |\n"
    "|---|---|---|---|\n"
    "| images | 7,390 | 2,048 | 40 generated |\n"
    "| model | resnet34 | resnet18 | resnet18 |\n"
    "| presize / size | 460 / 224 | 128 / 96 | 96 / 64 |\n"
    "| batch size | 64 | 32 | 8 |\n"
    "| epochs | `fine_tune(2)` + 6, fp16 | `fine_tune(1)` + 2 | `fine_tune(1)` + 1 |\n\n"
    "The folder is the one the `FASHION_PETS` environment variable names, else `fashion-pets` (GPU) or "
    "`fashion-pets-2048` (CPU) here, made on first use (about 10 seconds per 1,000 images).",
    SMALL + "import torch\n"
    "from fastvision.all import *\n"
    "GPU = torch.cuda.is_available()\n"
    "if SMALL:\n"
    "    n_images, arch, presize, size, bs, epochs = 40, resnet18, 96, 64, 8, (1, 1)\n"
    "elif GPU:  # the chapter's settings\n"
    "    n_images, arch, presize, size, bs, epochs = 7390, resnet34, 460, 224, 64, (2, 6)\n"
    "else:  # a CPU: minutes, not hours\n"
    "    n_images, arch, presize, size, bs, epochs = 2048, resnet18, 128, 96, 32, (1, 2)\n"
    "if SMALL:\n"
    "    path = make_image_folder('nb-pets', classes=('Bag', 'Coat', 'sandal', 'trouser'), n_per_class=10, layout='name')\n"
    "else:\n"
    "    path = Path(os.environ.get('FASHION_PETS', 'fashion-pets' if n_images == 7390 else f'fashion-pets-{n_images}'))\n"
    "    if not path.exists():\n"
    "        make_fashion_pets(path, n=n_images)  # Pets-like JPEGs from the real Fashion-MNIST, once\n"
    "files = get_image_files(path)\n"
    "len(files), [f.name for f in files[:3]]",
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
    "learn = vision_learner(dls, arch, metrics=error_rate, pretrained=False)  # offline: no ImageNet weights\n"
    "learn.lr_find()",
    "learn.fine_tune(epochs[0], base_lr=3e-3)",
    "md:Discriminative learning rates: `slice(lo, hi)` spreads geometrically over the 3 parameter groups. "
    "Mixed precision (`to_fp16`) on a GPU only: a CPU without bf16 units gains nothing from it.",
    "learn.unfreeze()\n"
    "if GPU:\n"
    "    learn.to_fp16()\n"
    "learn.fit_one_cycle(epochs[1], lr_max=slice(1e-5, 1e-3))\n"
    "learn.to_fp32();",
    "interp = ClassificationInterpretation.from_learner(learn)\n"
    "interp.plot_confusion_matrix(figsize=(6, 6))\n"
    "interp.most_confused(min_val=1)[:5]",
    "interp.plot_top_losses(4, nrows=1);",
    "md:Export (a JSON description and safetensors weights, no pickle) and predict with the loaded model; "
    "[05 · Deploying](05_deploy.ipynb) goes further (ONNX, the command line).",
    "learn.export('pets_model')\ninf = load_learner('pets_model')\ninf.predict(files[0])",
]

FMNIST = [
    "md:# 02 · Fashion-MNIST, the plain-PyTorch tutorial flow\n\n"
    "The data as tensors, a linear baseline, a non-linear model and a TinyVGG CNN, each trained through "
    "`Learner` with plain SGD as in the PyTorch tutorials, then compared in one table and one plot "
    "([`compare_learners`, `plot_comparison`](../docs/api/compare.md)), and the training history "
    "of the CNN.\n\n"
    "**Settings.** The whole real Fashion-MNIST (60,000 training and 10,000 test images of 28 x 28), "
    "batch size 32, SGD at lr 0.1, 3 epochs per model (the saved outputs: about 4 minutes on 2 CPU cores). "
    "In CI (`FASTVISION_NB_SMALL=1`): 2,000 + 500 images and 1 epoch.",
    SMALL + "import torch\nfrom torch import nn\nfrom fastvision.all import *\n"
    "n_train, n_test, epochs = (2000, 500, 1) if SMALL else (None, None, 3)\n"
    "train_ds, test_ds = fashion_mnist_datasets(n_train, n_test)  # uint8 tensors and their labels\n"
    "dls = DataLoaders.from_dsets(train_ds, test_ds, bs=32, after_batch=[IntToFloatTensor()])\n"
    "xb, yb = dls.one_batch()\n"
    "len(train_ds), len(test_ds), xb.shape, yb[:8], dls.vocab",
    "md:One function trains a model; `TrainTimer` records each epoch's seconds for the comparison.",
    "def train(model, lr=0.1):\n"
    "    learn = Learner(dls, model, loss_func=nn.CrossEntropyLoss(), opt_func=torch.optim.SGD,\n"
    "                    metrics=accuracy, cbs=TrainTimer())\n"
    "    learn.fit(epochs, lr)\n"
    "    return learn\n"
    "learners = {}",
    "torch.manual_seed(42)\nlearners['linear'] = train(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)))",
    "torch.manual_seed(42)\n"
    "learners['mlp'] = train(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU()))",
    "torch.manual_seed(42)\nlearners['tinyvgg'] = train(TinyVGG(n_in=1, n_out=10, hidden=10))",
    "md:The comparison: last-epoch metrics, parameters, epochs and training time, best first.",
    "table = compare_learners(learners)\ntable",
    "plot_comparison(table);",
    "md:The history of the CNN: the smoothed training loss per batch with the validation loss at each "
    "epoch end (`plot_loss`), and every recorded column per epoch (`plot_metrics`).",
    "cnn = learners['tinyvgg']\ncnn.recorder.plot_loss();",
    "cnn.recorder.plot_metrics();",
    "md:Predictions: green when right, red when wrong.",
    "cnn.show_results(max_n=9);",
    "interp = ClassificationInterpretation.from_learner(cnn)\ninterp.plot_confusion_matrix(figsize=(6, 6));",
    "md:Save and load the weights (state dicts, written atomically, read with `weights_only=True`).",
    "cnn.save('tinyvgg')\n"
    "fresh = Learner(dls, TinyVGG(n_in=1, n_out=10, hidden=10), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)\n"
    "fresh.load('tinyvgg')\n"
    "assert all(torch.equal(a, b) for a, b in zip(fresh.model.state_dict().values(), cnn.model.state_dict().values()))\n"
    "fresh.validate()",
]

CALLBACKS = [
    "md:# 03 · Callbacks: checkpoints, early stopping, reduce-lr-on-plateau, CSV and TensorBoard logging\n\n"
    "**Settings.** 10,000 training and 2,000 test images of the real Fashion-MNIST and a small TinyVGG "
    "(the saved outputs: about 2 minutes on 2 CPU cores). In CI (`FASTVISION_NB_SMALL=1`): 1,000 + 300 images.",
    SMALL + "import torch\nfrom torch import nn\nfrom fastvision.all import *\n"
    "n_train, n_test = (1000, 300) if SMALL else (10000, 2000)\n"
    "train_ds, test_ds = fashion_mnist_datasets(n_train, n_test)\n"
    "dls = DataLoaders.from_dsets(train_ds, test_ds, bs=64, after_batch=[IntToFloatTensor()])\n"
    "def model():\n"
    "    torch.manual_seed(0)\n"
    "    return TinyVGG(n_in=1, n_out=10, hidden=8)\n"
    "len(train_ds), len(test_ds)",
    "md:`CSVLogger` writes one row per epoch; `SaveModelCallback` keeps the weights of the best epoch by a "
    "monitored column and loads them at the end.",
    "learn = Learner(dls, model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy, cbs=CSVLogger())\n"
    "learn.fit_one_cycle(4, 1e-2, cbs=SaveModelCallback(monitor='accuracy'))  # fit's cbs last for this fit only\n"
    "learn.csv_logger.read_log(as_frame=True)",
    "md:A monitor name that is not recorded fails at `fit` start, listing the names that are.",
    "try:\n    learn.fit(1, cbs=EarlyStoppingCallback(monitor='val_loss'))\nexcept ValueError as e:\n    print(e)",
    "md:Early stopping with the best weights restored, and the learning rate halved whenever the validation "
    "loss stops improving; the learning rate is deliberately too high, so both have work to do.",
    "learn = Learner(dls, model(), loss_func=nn.CrossEntropyLoss(), metrics=accuracy)\n"
    "learn.fit(10, 2e-2, cbs=[EarlyStoppingCallback(patience=3, restore_best_weights=True),\n"
    "                        ReduceLROnPlateau(patience=1, factor=2)])\n"
    "print(f\"{len(learn.recorder.values)} epochs run, lr at the end {learn.opt.param_groups[0]['lr']:g}\")",
    "try:\n    import torch.utils.tensorboard  # noqa: F401\n"
    "    learn.fit(1, cbs=TensorBoardCallback(log_dir='runs/nb'))\nexcept ImportError as e:\n    print(e)",
]

POINTS = [
    "md:# 04 · Binary and multiclass classification of 2-D points\n\n"
    "The small problems of a first deep-learning course: points in the plane, a model of a few linear "
    "layers, hundreds of epochs, and a plot of the regions it learned "
    "([`plot_decision_boundary`](../docs/api/plots.md#plot_decision_boundary)). The data is made with torch "
    "(no scikit-learn).\n\n"
    "- **Binary**: one output (a logit) and `nn.BCEWithLogitsLoss`; the targets are floats shaped like the "
    "output, `(n, 1)`. `accuracy` thresholds a single logit at 0.\n"
    "- **Multiclass**: one output per class and `nn.CrossEntropyLoss`; the targets are class indices.\n\n"
    "**Settings.** 1,000 points per problem, 500 epochs, a table row every 100th epoch "
    "(`ProgressCallback(show_every=100)`; `learn.recorder` keeps every epoch), about 1 minute on 2 CPU cores "
    "(the saved outputs). In CI (`FASTVISION_NB_SMALL=1`): 30 epochs.",
    SMALL + "import math\nimport matplotlib.pyplot as plt\nimport torch\nfrom torch import nn\n"
    "from torch.utils.data import TensorDataset\nfrom fastvision.all import *\n"
    "epochs, show_every = (30, 10) if SMALL else (500, 100)\n\n"
    "def two_moons(n, noise=0.15, seed=0):\n"
    "    \"\"\"`n` points on two interleaved half circles, and their class (0 or 1).\"\"\"\n"
    "    g = torch.Generator().manual_seed(seed)\n"
    "    y = torch.randint(0, 2, (n,), generator=g)\n"
    "    t = torch.rand(n, generator=g) * math.pi\n"
    "    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)\n"
    "    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)\n"
    "    x = torch.where(y[:, None] == 1, lower, upper)\n"
    "    return x + noise * torch.randn(n, 2, generator=g), y\n\n"
    "x, y = two_moons(1000)\n"
    "x_train, y_train, x_valid, y_valid = x[:800], y[:800], x[800:], y[800:]\n"
    "fig, ax = plt.subplots(figsize=(4, 4))\n"
    "ax.scatter(x[:, 0], x[:, 1], c=y, cmap='coolwarm', s=8)\n"
    "ax.set_title('two moons');",
    "md:## Binary: one logit and `BCEWithLogitsLoss`\n\n"
    "The targets become floats of shape `(n, 1)`, like the model's output. First a single linear layer: "
    "logistic regression, whose boundary is a straight line.",
    "dls = DataLoaders.from_dsets(TensorDataset(x_train, y_train.float()[:, None]),\n"
    "                             TensorDataset(x_valid, y_valid.float()[:, None]), bs=100)\n"
    "torch.manual_seed(0)\n"
    "logreg = Learner(dls, nn.Linear(2, 1), loss_func=nn.BCEWithLogitsLoss(), metrics=accuracy,\n"
    "                 cbs=ProgressCallback(show_every=show_every))\n"
    "logreg.fit_one_cycle(epochs, 1e-2)",
    "plot_decision_boundary(logreg, x_valid, y_valid);",
    "md:Two hidden layers bend the boundary around the moons.",
    "def mlp(n_out, hidden=32):\n"
    "    torch.manual_seed(0)\n"
    "    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),\n"
    "                         nn.Linear(hidden, n_out))\n\n"
    "learn = Learner(dls, mlp(1), loss_func=nn.BCEWithLogitsLoss(), metrics=accuracy,\n"
    "                cbs=ProgressCallback(show_every=show_every))\n"
    "learn.fit_one_cycle(epochs, 1e-2)",
    "plot_decision_boundary(learn, x_valid, y_valid);",
    "md:The loss curves: the smoothed training loss per batch and the validation loss per epoch, then every "
    "column per epoch.",
    "learn.recorder.plot_loss(log=True);",
    "learn.recorder.plot_metrics();",
    "compare_learners({'logistic regression': logreg, 'mlp': learn})",
    "md:Probabilities for new points: the sigmoid of the logit is P(class 1).",
    "new = torch.tensor([[0.0, 1.0], [1.0, -0.5], [0.5, 0.25]])\n"
    "learn.model.eval()\n"
    "with torch.no_grad():\n"
    "    print(torch.sigmoid(learn.model(new)).squeeze(1))",
    "md:## Multiclass: three spirals and `CrossEntropyLoss`\n\n"
    "Three outputs, one per class; the targets stay class indices (`int64`).",
    "def spirals(n_per_class, n_classes=3, noise=0.2, seed=0):\n"
    "    \"\"\"Points on `n_classes` interleaved spiral arms, and their class.\"\"\"\n"
    "    g = torch.Generator().manual_seed(seed)\n"
    "    r = torch.linspace(0.0, 1.0, n_per_class).repeat(n_classes)\n"
    "    y = torch.arange(n_classes).repeat_interleave(n_per_class)\n"
    "    t = (y + r) * 4 + noise * torch.randn(len(r), generator=g)\n"
    "    x = torch.stack([r * torch.sin(t), r * torch.cos(t)], 1)\n"
    "    perm = torch.randperm(len(x), generator=g)\n"
    "    return x[perm], y[perm]\n\n"
    "x3, y3 = spirals(334)\n"
    "dls3 = DataLoaders.from_dsets(TensorDataset(x3[:800], y3[:800]), TensorDataset(x3[800:], y3[800:]), bs=100)\n"
    "learn3 = Learner(dls3, mlp(3, hidden=64), loss_func=nn.CrossEntropyLoss(), metrics=accuracy,\n"
    "                 cbs=ProgressCallback(show_every=show_every))\n"
    "learn3.fit_one_cycle(epochs, 1e-2)",
    "plot_decision_boundary(learn3, x3, y3);",
    "learn3.recorder.plot_metrics();",
]

DEPLOY = [
    "md:# 05 · Deploying: export, `load_learner`, ONNX and the command line\n\n"
    "Train a model, then use it without the training code: `learn.export()` writes a JSON description and "
    "safetensors weights (no pickle), `load_learner` reads them back for `predict`, `learn.export_onnx()` "
    "writes an ONNX file for onnxruntime (no PyTorch needed) with its "
    "[input contract](../docs/export.md#onnx), and the `fastvision predict` and `fastvision export-onnx` "
    "commands do the same from a shell ([Command line](../docs/cli.md)).\n\n"
    "**Settings.** The model is only a means here: resnet18 from random weights on the fashion-pets folder "
    "(2,048 images, 64 px, 2 epochs of `fit_one_cycle`: a few minutes on 2 shared CPU cores, the saved outputs); "
    "on a GPU all 7,390 images at 224 px with resnet34 and 4 epochs; in CI (`FASTVISION_NB_SMALL=1`) 40 generated images. The "
    "folder is the one `FASHION_PETS` names, as in [01](01_pets.ipynb).",
    SMALL + "import shutil, subprocess, sys\nimport numpy as np\nimport torch\nfrom fastvision.all import *\n"
    "GPU = torch.cuda.is_available()\n"
    "if SMALL:\n"
    "    n_images, arch, size, bs, epochs = 40, resnet18, 64, 8, 1\n"
    "elif GPU:\n"
    "    n_images, arch, size, bs, epochs = 7390, resnet34, 224, 64, 4\n"
    "else:\n"
    "    n_images, arch, size, bs, epochs = 2048, resnet18, 64, 64, 2\n"
    "if SMALL:\n"
    "    path = make_image_folder('nb-pets', classes=('Bag', 'Coat', 'sandal', 'trouser'), n_per_class=10, layout='name')\n"
    "else:\n"
    "    path = Path(os.environ.get('FASHION_PETS', 'fashion-pets' if n_images == 7390 else f'fashion-pets-{n_images}'))\n"
    "    if not path.exists():\n"
    "        make_fashion_pets(path, n=n_images)\n"
    "pets = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,\n"
    "                 splitter=RandomSplitter(seed=42),\n"
    "                 get_y=using_attr(RegexLabeller(r'(.+)_\\d+.jpg$'), 'name'), item_tfms=Resize(size))\n"
    "dls = pets.dataloaders(path, bs=bs)\n"
    "learn = vision_learner(dls, arch, metrics=accuracy, pretrained=False)  # random weights: train every layer\n"
    "learn.fit_one_cycle(epochs, 3e-3)",
    "md:## Export and `load_learner`\n\n"
    "`export` writes `NAME.json` (architecture, classes, the input contract, the transforms) and the "
    "weights `NAME.<hash>.safetensors` under `learn.path`; `load_learner` checks them against each other.",
    "jfile = learn.export('fashion_pets')\n"
    "inf = load_learner(jfile)\n"
    "print(sorted(p.name for p in jfile.parent.glob('fashion_pets*')))\n"
    "inf",
    "md:A few validation images stand in for what a client sends.",
    "Path('samples').mkdir(exist_ok=True)\n"
    "samples = [Path(shutil.copy(f, 'samples')) for f in dls.valid_ds.items[:4]]\n"
    "label, idx, probs = inf.predict(samples[0])\n"
    "label, idx, probs.round(decimals=3)",
    "md:A list of items is predicted in batches and gives one `(label, index, probabilities)` per item.",
    "for f, (label, _, probs) in zip(samples, inf.predict(samples)):\n"
    "    print(f'{f.name:<18} -> {label:<12} {probs.max():.3f}')",
    "md:## ONNX\n\n"
    "With `preprocess=True` (the default) the graph takes `uint8` pixels `B x C x H x W` and does the "
    "pipeline's `/ 255` and normalisation itself; decoding and resizing to `H x W` are the caller's. The "
    "contract is stored in the file (`onnx_metadata`). `check=True` (the default) compared the file with "
    "PyTorch in onnxruntime before writing it.",
    "onnx_file = learn.export_onnx('fashion_pets.onnx')\n"
    "meta = onnx_metadata(onnx_file)\n"
    "meta['input'], meta['output'], meta['vocab']",
    "import onnxruntime as ort\n"
    "from PIL import Image, ImageOps\n\n"
    "session = ort.InferenceSession(str(onnx_file))\n"
    "c, h, w = meta['input']['shape'][1:]\n"
    "def pixels(f):  # centre crop and resize to w x h (bilinear, like fastvision's Resize), then C x H x W\n"
    "    return np.asarray(ImageOps.fit(Image.open(f).convert('RGB'), (w, h), Image.BILINEAR)).transpose(2, 0, 1)\n\n"
    "x = np.stack([pixels(f) for f in samples])\n"
    "onnx_probs = session.run(['output'], {'input': x})[0]\n"
    "x.dtype, x.shape, onnx_probs.shape",
    "md:The same labels as `load_learner`; the probabilities differ a little because PIL's resize is not "
    "fastvision's (the contract leaves the resize to the caller).",
    "torch_probs = torch.stack([p for _, _, p in inf.predict(samples)]).numpy()\n"
    "print('onnxruntime:', [meta['vocab'][i] for i in onnx_probs.argmax(1)])\n"
    "print('PyTorch:    ', [inf.vocab[i] for i in torch_probs.argmax(1)])\n"
    "print('largest probability difference:', float(np.abs(onnx_probs - torch_probs).max().round(4)))",
    "md:## The command line\n\n"
    "The same from a shell: `fastvision predict fashion_pets.json samples/*.jpg` and "
    "`fastvision export-onnx fashion_pets.json model.onnx` (in Jupyter, `!fastvision ...`). Here a small "
    "function runs the installed `fastvision` command and prints what it prints.",
    "FASTVISION = shutil.which('fastvision') or str(Path(sys.executable).with_name('fastvision'))\n\n"
    "def fastvision(*args):\n"
    "    \"\"\"Run `fastvision ARGS` and show its output.\"\"\"\n"
    "    res = subprocess.run([FASTVISION, *map(str, args)], capture_output=True, text=True)\n"
    "    print(res.stdout + res.stderr, end='')\n\n"
    "fastvision('predict', 'fashion_pets.json', *samples)",
    "fastvision('export-onnx', 'fashion_pets.json', 'model.onnx')",
]

NOTEBOOKS = {
    "01_pets.ipynb": PETS,
    "02_fashion_mnist.ipynb": FMNIST,
    "03_callbacks.ipynb": CALLBACKS,
    "04_points.ipynb": POINTS,
    "05_deploy.ipynb": DEPLOY,
}


def build(cells: list[str], name: str) -> nbf.NotebookNode:
    """Return the notebook `name` made of `cells` ("md:" starts a Markdown cell), without outputs."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbf.v4.new_markdown_cell(c[3:]) if c.startswith("md:") else nbf.v4.new_code_cell(c) for c in cells
    ]
    for i, cell in enumerate(nb.cells):  # stable ids: rewriting a notebook changes only what changed
        cell.id = f"{name[:2]}-{i:02d}"
    return nb


# ---- stored outputs: fastprogress's HTML as plain lines ----


class _ProgressHTML(html.parser.HTMLParser):
    """Collect the rows of fastprogress's results table (`<table class="fastprogress">`) and its `<p>` lines."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.lines: list[str] = []
        self._cell: list[str] | None = None
        self._p: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "p":
            self._p = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "p" and self._p is not None:
            self.lines.append("".join(self._p).strip())
            self._p = None

    def handle_data(self, data: str) -> None:
        for part in (self._cell, self._p):
            if part is not None:
                part.append(data)


def _is_progress(html_text: str) -> bool:
    """fastprogress's outputs: its `<style>` block, a bar (`<progress>`), the results table, or what is left."""
    t = html_text.strip()
    return (
        "progress-bar-interrupted" in t
        or "<progress" in t
        or 'class="fastprogress"' in t
        or t in ("", "<div></div>")
    )


def plain_progress(nb: nbf.NotebookNode) -> int:
    """Replace fastprogress's HTML outputs by the results table as aligned text lines; return how many were replaced.

    The text is what `fit` prints outside a notebook (`fastvision.callback.progress.format_row`); progress
    bars, the style block and emptied displays are dropped. Adjacent stdout streams are merged.
    """
    from fastvision.callback.progress import format_row

    replaced = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        outs: list = []
        for out in cell.get("outputs", []):
            data = out.get("data", {}) if out.output_type in ("display_data", "execute_result") else {}
            page = data.get("text/html")
            page = "".join(page) if isinstance(page, list) else page
            if page is None or not _is_progress(page):
                outs.append(out)
                continue
            replaced += 1
            parser = _ProgressHTML()
            parser.feed(page)
            lines, widths = [], None
            for row in (r for r in parser.rows if r):
                line, widths = format_row(row, widths)
                lines.append(line)
            lines += parser.lines
            if lines:
                outs.append(nbf.v4.new_output("stream", name="stdout", text="\n".join(lines) + "\n"))
        merged: list = []
        for out in outs:
            prev = merged[-1] if merged else None
            if prev is not None and out.output_type == prev.output_type == "stream" and out.name == prev.name:
                prev.text += out.text
            else:
                merged.append(out)
        cell.outputs = merged
    return replaced


# ---- execution ----


def _kernel_env(workdir: Path) -> dict[str, str]:
    """The environment of the executing kernel: real settings, the fashion-pets folder, 72-dpi figures."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "FASTVISION_NB_SMALL", "MPLBACKEND")}
    (workdir / "matplotlibrc").write_text("figure.dpi: 72\n")
    env.update(FASHION_PETS=str(FASHION_PETS), MATPLOTLIBRC=str(workdir / "matplotlibrc"))
    return env


def make_fashion_pets_folder(n: int) -> None:
    """Write the fashion-pets folder with `fastvision make-fashion-pets` (nothing to do when it is there)."""
    exe = Path(sys.executable).with_name("fastvision")
    cmd = [str(exe), "make-fashion-pets", str(FASHION_PETS), "--n", str(n)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def execute(name: str, timeout: int = 1800) -> float:
    """Build notebook `name`, execute it in a temporary directory and write it with its outputs; return seconds."""
    from nbclient import NotebookClient

    nb = build(NOTEBOOKS[name], name)
    with tempfile.TemporaryDirectory(prefix="nb-run-") as tmp:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            record_timing=False,
            resources={"metadata": {"path": tmp}},
        )
        start = time.time()
        client.execute(env=_kernel_env(Path(tmp)))  # passed on to the kernel manager's start_kernel
        seconds = time.time() - start
    plain_progress(nb)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{name}: {errors[0].ename}: {errors[0].evalue}")
    import torch

    nb.metadata["fastvision"] = {
        "executed_with": "nbs/make_notebooks.py --execute",
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "seconds": round(seconds),
    }
    nbf.write(nb, HERE / name)
    return seconds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--execute", action="store_true", help="execute the notebooks and store their outputs")
    ap.add_argument("only", nargs="*", help="name prefixes of the notebooks to write (default: all)")
    args = ap.parse_args(argv)
    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(p) for p in args.only)]
    if not names:
        raise SystemExit(f"no notebook starts with {args.only}; the notebooks are {list(NOTEBOOKS)}")
    if not args.execute:
        for name in names:
            nbf.write(build(NOTEBOOKS[name], name), HERE / name)
            print(f"wrote {HERE / name} (not executed)")
        return
    import torch

    if any(n.startswith(("01", "05")) for n in names):
        make_fashion_pets_folder(7390 if torch.cuda.is_available() else 2048)
    for name in names:
        print(f"executing {name} ...", flush=True)
        seconds = execute(name)
        size = (HERE / name).stat().st_size
        print(f"wrote {HERE / name}: {seconds / 60:.1f} min, {size / 1e6:.2f} MB", flush=True)


if __name__ == "__main__":
    main()
