"""``gamornet train`` and ``gamornet tl``: the command-line twins of gamornet_train_keras and gamornet_tl_keras.

They take catalogues of image files (see :mod:`gamornet.training.data`) instead of
arrays, with the parameters and defaults of the 0.4.x functions, and add
resumable runs, tf.distribute, mixed precision, preprocessing and
augmentation. TensorFlow is imported inside the handlers, so
``gamornet --help`` stays fast.
"""

import argparse
import os

from gamornet._utils.checks import OPTIMIZERS
from gamornet.cli._types import non_negative_int, number, positive_int
from gamornet.science.preprocess import SCALINGS, STRETCHES
from gamornet.presets import LOAD_BOOLS_PRESETS, TRAINABLE_BOOLS_PRESETS

_DESCRIPTION = """\
Train GaMorNet (Keras) on the galaxies of a catalogue: the command-line twin of
gamornet_train_keras{tl}. A catalogue is a CSV, ECSV, FITS or Parquet table with
a column of image paths (FITS files, or .npy files of one image; relative to
the catalogue's folder) and a column of labels: disk, indeterminate or bulge,
or 0, 1, 2 (or three one-hot columns: --label-column disk,indeterminate,bulge).

Images are read in parallel threads while the network trains; they are kept in
memory when they fit (--cache auto), else streamed from disk every epoch.

The output folder is a model folder: trained_model.hdf5, model_card.json (what
it was trained on, and the epoch kept), preprocessing.json (the preprocessing
every image classified by the model gets: `gamornet predict --model
OUTPUT_DIR` applies it), metrics.csv (one row per finished epoch, numbered
from 1), training_curves.png, augmentation.json when augmentation is on, and
model_NN.hdf5 every --checkpoint-freq epochs. `gamornet calibrate --save` and
`gamornet thresholds --save` add a calibration and thresholds to it;
`gamornet models --info OUTPUT_DIR` shows what it holds.

The recipe: the weights saved are those of the epoch with the lowest
validation loss (--keep-last: the last epoch's), and the epoch kept is printed.
With --optimizer adam the learning rate warms up over half an epoch from lr/20
to --lr, then falls along a half cosine to 0 (--lr-schedule), and after every
epoch a guard checks that training has not diverged (a loss above ln 3 =
1.099, that of a uniform guess, or one class for at least 97% of the
validation galaxies): if it has, it says so, suggests a lower --lr, and stops
with exit status 1 (--keep-going goes on).

Runs are resumable: the state after each epoch (weights, optimizer, random
state) is kept in OUTPUT_DIR/backup/. A run killed at any moment (a time limit,
a crash) continues from its last finished epoch when the same command is run
again, with the numbers the uninterrupted run would have had; --fresh starts
over.
"""

_EPILOG = """\
distributed training (see the documentation page "Training on your own galaxies"):
  --distribute mirrored      all GPUs of this machine (MirroredStrategy)
  --distribute multiworker   one process per machine (or per GPU), described by
                             TF_CONFIG, or by Slurm's variables under srun
                             (MultiWorkerMirroredStrategy); worker 0 writes the files
  --batch-size is the global batch, shared among the replicas. With k times
  more replicas, keep the per-replica batch by multiplying --batch-size by k,
  and scale --lr by k too (the linear scaling rule, Goyal et al. 2017).

recommended recipe from scratch (the training page has its recalls on two simulators):
  gamornet train --catalog train.csv --validation-catalog val.csv --input-shape CANDELS \\
      --output-dir run/ --optimizer adam --lr 0.0006 --scaling peak --epochs 8 --batch-size 64

examples:
  gamornet train --catalog train.csv --validation-catalog val.csv --input-shape CANDELS \\
      --output-dir run/ --epochs 20 --batch-size 64 --lr 0.0001
  gamornet tl --model CANDELS_sim --catalog real.csv --validation-catalog real_val.csv \\
      --input-shape CANDELS --output-dir tl_run/ --trainable-bools train_bools_CANDELS
"""


def _bools(presets):
    def parse(text):
        if text in presets:
            return text
        words = [word.strip().lower() for word in text.split(",")]
        values = {"true": True, "t": True, "1": True, "false": False, "f": False, "0": False}
        if len(words) != 8 or any(word not in values for word in words):
            raise argparse.ArgumentTypeError(
                f"expected {' or '.join(presets)}, or 8 comma-separated booleans (True,False,...), got {text!r}"
            )
        return [values[word] for word in words]

    return parse


def _add_common(parser, lr_default):
    data = parser.add_argument_group("data")
    data.add_argument("--catalog", required=True, metavar="TABLE", help="catalogue of the training images")
    data.add_argument("--validation-catalog", required=True, metavar="TABLE", help="catalogue of the validation images")
    data.add_argument("--input-shape", required=True, metavar="SDSS|CANDELS|X,Y,NDIM", help="the images' shape")
    data.add_argument("--path-column", default="path", help="column of image paths (default: path)")
    data.add_argument("--label-column", default="label",
                      help="column of labels, or three one-hot columns DISK,INDET,BULGE (default: label)")  # fmt: skip
    data.add_argument("--cache", choices=("auto", "memory", "stream"), default="auto",
                      help="keep the decoded images in memory, or stream them from disk every epoch; auto: in memory "
                           "when they take at most a quarter of the memory available (default: auto)")  # fmt: skip

    fit = parser.add_argument_group("training (the 0.4.x parameters)")
    fit.add_argument("--output-dir", required=True, help="folder for the model and its files (created if missing)")
    fit.add_argument("--epochs", type=positive_int, default=100, help="passes over the training images (default: 100)")
    fit.add_argument("--checkpoint-freq", type=non_negative_int, default=0,
                     help="save model_NN.hdf5 every this many epochs; 0: none (default: 0)")  # fmt: skip
    fit.add_argument("--batch-size", type=positive_int, default=64,
                     help="images per gradient step, over all replicas (default: 64)")  # fmt: skip
    fit.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                     help="sgd: stochastic gradient descent with momentum, as GaMorNet was trained; adam: Adam "
                     "(Kingma & Ba 2015), faster from scratch, with an lr about ten times smaller (default: sgd)")
    fit.add_argument("--lr", type=number, default=lr_default, help=f"learning rate (default: {lr_default:g})")
    fit.add_argument("--momentum", type=number, default=0.9, help="SGD momentum (default: 0.9; not used by adam)")
    fit.add_argument("--decay", type=number, default=0.0,
                     help="learning-rate decay, lr / (1 + decay * step) (default: 0)")  # fmt: skip
    fit.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    _add_recipe(fit)
    fit.add_argument("--loss", default="categorical_crossentropy",
                     help="a Keras loss name (default: categorical_crossentropy)")  # fmt: skip
    fit.add_argument("--no-save-model", dest="save_model", action="store_false",
                     help="do not write trained_model.hdf5 (checkpoints are still written)")  # fmt: skip

    images = parser.add_argument_group(
        "preprocessing (off unless one of these is given; see gamornet.science.preprocess)"
    )
    images.add_argument("--stretch", choices=STRETCHES, default=None, help="stretch (default when on: none)")
    images.add_argument("--scaling", choices=SCALINGS, default=None, help="per-image scaling (default when on: peak)")
    images.add_argument("--softening", type=number, default=None,
                        help="stretch softening, in units of the background noise (default when on: 3)")  # fmt: skip
    images.add_argument("--border", type=positive_int, default=None,
                        help="width in pixels of the border used for the background (default when on: 4)")  # fmt: skip
    images.add_argument("--subtract-background", action="store_true", default=None,
                        help="subtract the border's median first")  # fmt: skip

    augment = parser.add_argument_group("augmentation of the training images (off by default)")
    augment.add_argument("--rotate-flip", action="store_true", help="random right-angle rotations and flips")
    augment.add_argument("--max-shift", type=number, default=0.0, metavar="PIXELS",
                         help="shift each training image by a random offset of up to PIXELS pixels in x and y, interpolated "
                              "(default: 0, no shift)")  # fmt: skip
    augment.add_argument("--noise-factor", type=number, default=1.0, metavar="F",
                         help="raise the background noise by a random factor between 1 and F (default: 1, none)")  # fmt: skip

    run = parser.add_argument_group("how it runs")
    run.add_argument("--distribute", choices=("none", "mirrored", "multiworker"), default="none",
                     help="tf.distribute strategy (default: none)")  # fmt: skip
    run.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="mixed precision: bf16 on CPU or GPU, fp16 on GPU only (default: fp32)")  # fmt: skip
    run.add_argument("--fresh", action="store_true", help="start over, forgetting the state of an earlier run")
    run.add_argument("--seed", type=non_negative_int, default=None,
                     help="seed of the initial weights, shuffling, augmentation and dropout (default: one is drawn "
                          "and recorded, and a resumed run keeps it; resuming with another seed is refused)")  # fmt: skip
    run.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _add_recipe(fit):
    """The options of the training recipe (gamornet.training.recipe)."""
    fit.add_argument("--lr-schedule", choices=("auto", "cosine", "constant"), default="auto",
                     help="cosine: warm up over half an epoch from lr/20 to --lr, then a half cosine to 0; constant: "
                          "--lr throughout (with --decay); auto: cosine with adam, constant with sgd (default: auto)")
    fit.add_argument("--keep-last", action="store_true",
                     help="save the last epoch's weights, not those of the epoch with the lowest validation loss")
    fit.add_argument("--keep-going", action="store_true",
                     help="when training diverges (see above), say so but go on rather than stop")


def add_parser(subparsers):
    """Add the ``train`` and ``tl`` subcommands."""
    train = subparsers.add_parser(
        "train", help="train GaMorNet (Keras) from scratch on a catalogue of image files",
        description=_DESCRIPTION.format(tl=""), epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    _add_common(train, 0.0001)
    train.add_argument("--load-model", metavar="MODEL", default=None,
                       help="start from the weights of MODEL (a file or a published name such as CANDELS_sim)")  # fmt: skip
    train.set_defaults(command_name="train", handler=run_train)

    tl = subparsers.add_parser(
        "tl", help="transfer learning: retrain a GaMorNet model (Keras) on a catalogue of image files",
        description=_DESCRIPTION.format(tl=" / gamornet_tl_keras (transfer learning)"), epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    tl.add_argument("--model", required=True, help="the starting model: a file or a published name (SDSS_sim ...)")
    _add_common(tl, 0.00001)
    tl.add_argument("--load-layers-bools", type=_bools(LOAD_BOOLS_PRESETS), default=[True] * 8,
                    metavar="BOOLS", help="which weighted layers take the model's weights: 8 comma-separated booleans, "
                    f"or {' or '.join(LOAD_BOOLS_PRESETS)} (default: all True)")  # fmt: skip
    tl.add_argument("--trainable-bools", type=_bools(TRAINABLE_BOOLS_PRESETS), default=[True] * 8,
                    metavar="BOOLS", help="which weighted layers are trained: 8 comma-separated booleans, or "
                    f"{' or '.join(TRAINABLE_BOOLS_PRESETS)} (default: all True)")  # fmt: skip
    tl.set_defaults(command_name="tl", handler=run_tl)


def _preprocessing(args):
    given = {name: getattr(args, name) for name in ("stretch", "scaling", "softening", "border", "subtract_background")
             if getattr(args, name) is not None}  # fmt: skip
    if not given:
        return None
    from gamornet.science.preprocess import preprocessing_settings

    return preprocessing_settings(**given)


def _options(args):
    from gamornet.training import _loop as _training_loop
    from gamornet.training.data import AugmentationSettings

    augmentation = AugmentationSettings(rotate_flip=args.rotate_flip, max_shift=args.max_shift,
                                        noise_factor=args.noise_factor)  # fmt: skip
    return _training_loop.check_run_options(
        preprocessing=_preprocessing(args), augmentation=augmentation,
        distribute=None if args.distribute == "none" else args.distribute, precision=args.precision, resume=True,
        fresh=args.fresh, seed=args.seed, cache={"auto": "auto", "memory": True, "stream": False}[args.cache],
        epoch_base=1, write_settings=True, curves=True, progress=not args.quiet,
    )  # fmt: skip


def _common_parameters(args):
    from gamornet.cli._options import parse_input_shape

    return dict(
        data=(args.catalog, None, args.validation_catalog, None), input_shape=parse_input_shape(args.input_shape),
        files_save_path=args.output_dir, epochs=args.epochs, checkpoint_freq=args.checkpoint_freq,
        batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, decay=args.decay, nesterov=args.nesterov,
        loss=args.loss, save_model=args.save_model, verbose=0, path_column=args.path_column,
        label_column=args.label_column, optimizer=args.optimizer, lr_schedule=args.lr_schedule,
        keep_best=not args.keep_last, divergence_guard="auto",
        training_recipe={"keep_going": args.keep_going, "lr_option": "--lr"},
    )  # fmt: skip


def _report(args, what):
    if args.quiet:
        return
    if not os.path.isdir(args.output_dir):  # a worker of a multi-worker run: worker 0 writes the files
        print(f"{what} finished; worker 0 writes the files")
        return
    names = sorted(name for name in os.listdir(args.output_dir) if not name.startswith("."))
    print(f"{what} finished. In {args.output_dir}: {', '.join(names)}")


def _outcome(args, parameters, what):
    """Report a finished run; exit status 1 when the divergence guard stopped it."""
    _report(args, what)
    diverged = parameters["training_recipe"].get("outcome", {}).get("diverged")
    if diverged:
        import sys

        print(f"gamornet {args.command_name}: {diverged}", file=sys.stderr)
        return 0 if args.keep_going else 1
    return 0


def run_train(args):
    """Handler of ``gamornet train``."""
    options = _options(args)
    from gamornet.training.keras import train_from_scratch

    parameters = _common_parameters(args)
    train_from_scratch(options=options, load_model=args.load_model is not None, model_load_path=args.load_model,
                       **parameters)  # fmt: skip
    return _outcome(args, parameters, "Training")


def run_tl(args):
    """Handler of ``gamornet tl``."""
    options = _options(args)
    from gamornet.training.keras import transfer

    parameters = _common_parameters(args)
    transfer(options=options, load_layers_bools=args.load_layers_bools, trainable_bools=args.trainable_bools,
             model_load_path=args.model, **parameters)  # fmt: skip
    return _outcome(args, parameters, "Transfer learning")
