"""Does noise augmentation narrow the gap between in-domain and shifted recall?

Two networks are trained from scratch on the same simulated galaxies, with the
same seed and settings, one without augmentation and one with noise
augmentation (``AugmentationSettings(noise_factor=...)``: each training image's
background noise raised by a random factor between 1 and that value). Both are
evaluated on

- an in-domain test set: new galaxies from the training survey;
- a shifted test set: new galaxies seen through another PSF (a Kolmogorov
  profile of 0.45 arcsec FWHM) and 2.5 times the background noise (Gaussian
  read noise added to the sky's Poisson noise), as the demo's shifted set of
  the calibration issue is built;
- the same galaxies with only the noise shifted, and with only the PSF
  shifted, to tell the two effects apart.

For each network it prints disk and bulge recall (the fraction of the true
disks, and bulges, classified as such; the class is the most probable one) on
both sets and the gap between them. The settings follow ``gamornet demo``:
CANDELS-like 64 x 64 cutouts of H = 19-22.5 mag, an asinh stretch with peak
scaling, indeterminate galaxies left out of training, SGD with Nesterov
momentum and a warm-up plus cosine learning rate peaking at 0.003.

Usage::

    python benchmarks/augmentation_shift.py                 # 4,000 training galaxies, 3 epochs (~1 h on 2 busy cores)
    python benchmarks/augmentation_shift.py --quick         # a smoke run
"""

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--noise-factor", type=float, default=3.0)
    parser.add_argument("--shifted-psf-fwhm", type=float, default=0.45)
    parser.add_argument("--shifted-noise", type=float, default=2.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--output", default=None, help="also write the results as JSON here")
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args(argv)
    if arguments.quick:
        arguments.n_train, arguments.n_test, arguments.epochs = 300, 200, 1
    return arguments


def shifted_survey(survey, psf_fwhm=None, noise=1.0):
    """``survey`` seen through a Kolmogorov PSF of ``psf_fwhm`` arcsec (None: its own) and ``noise`` times its noise."""
    sky_variance = survey.sky_level * survey.gain
    read_variance = noise**2 * (sky_variance + survey.read_noise**2) - sky_variance
    changes = {"read_noise": float(np.sqrt(read_variance))}
    if psf_fwhm is not None:
        changes.update(psf="kolmogorov", psf_fwhm=psf_fwhm)
    return dataclasses.replace(survey, name=f"{survey.name} shifted", **changes)


def recalls(probabilities, labels):
    predicted = np.argmax(probabilities, axis=1)
    true = np.argmax(labels, axis=1)
    return {name: float(np.mean(predicted[true == index] == index)) for index, name in ((0, "disk"), (2, "bulge"))}


def main(argv=None):
    arguments = parse_arguments(argv)
    from gamornet.demo.run import DemoConfig, _learning_rate, demo_survey
    from gamornet.presets import labels_from_bulge_to_total
    from gamornet.training.simulate import simulate_galaxies

    survey = demo_survey("CANDELS", 64, (19.0, 22.5))
    seeds = np.random.SeedSequence(arguments.seed).generate_state(3)
    test_seed = int(seeds[2])  # the test sets hold the same galaxies, seen differently
    psf, noise = arguments.shifted_psf_fwhm, arguments.shifted_noise
    started = time.perf_counter()
    sets = {}
    for name, count, preset, seed in (
        ("training", arguments.n_train, survey, int(seeds[0])),
        ("validation", max(200, arguments.n_test // 4), survey, int(seeds[1])),
        ("in-domain test", arguments.n_test, survey, test_seed),
        ("shifted test", arguments.n_test, shifted_survey(survey, psf, noise), test_seed),
        (f"noise x{noise:g} only", arguments.n_test, shifted_survey(survey, None, noise), test_seed),
        (f"PSF {psf:g}\" only", arguments.n_test, shifted_survey(survey, psf, 1.0), test_seed),
    ):
        images, table = simulate_galaxies(count, preset, seed=int(seed), n_workers=arguments.workers, progress=False)
        sets[name] = (images, labels_from_bulge_to_total(table["bulge_to_total"]))
        print(f"[{time.perf_counter() - started:5.0f} s] simulated the {name} set: {count} galaxies", flush=True)
    for name in ("training", "validation"):
        keep = sets[name][1][:, 1] == 0  # indeterminate galaxies left out of training, as in the demo
        sets[name] = (sets[name][0][keep], sets[name][1][keep])

    import gamornet
    from gamornet.keras_module import gamornet_train_keras
    from gamornet.training.data import AugmentationSettings

    settings = {"stretch": "asinh", "scaling": "peak", "softening": 3.0}
    steps = -(-len(sets["training"][1]) // 32)
    results = {}
    for label, augmentation in (("no augmentation", None),
                                (f"noise augmentation (factor 1-{arguments.noise_factor:g})",
                                 AugmentationSettings(noise_factor=arguments.noise_factor))):  # fmt: skip
        schedule = _learning_rate(DemoConfig(lr=0.003, lr_schedule="cosine", epochs=arguments.epochs), steps)
        results[label] = {}
        with tempfile.TemporaryDirectory(prefix="gamornet-augmentation-") as folder:
            gamornet_train_keras(
                *sets["training"], *sets["validation"], (64, 64, 1), files_save_path=folder, epochs=arguments.epochs,
                batch_size=32, lr=schedule, momentum=0.9, nesterov=True, verbose=0, preprocessing=settings,
                augmentation=augmentation, seed=arguments.seed,
            )  # fmt: skip
            with gamornet.load_predictor(os.path.join(folder, "trained_model.hdf5"), (64, 64, 1)) as predictor:
                for name in list(sets)[2:]:
                    images, labels = sets[name]
                    # The model folder's preprocessing.json: the predictor preprocesses the raw images itself.
                    probabilities = predictor.predict(images, batch_size=256)
                    results[label][name] = recalls(probabilities, labels)
        print(f"[{time.perf_counter() - started:5.0f} s] trained and evaluated: {label}", flush=True)

    print(f"\n{len(sets['training'][1])} training galaxies (indeterminate left out), {arguments.epochs} epochs; "
          f"test sets of {arguments.n_test}; shifted: Kolmogorov PSF {arguments.shifted_psf_fwhm}\" FWHM, noise x"
          f"{arguments.shifted_noise}\n")  # fmt: skip
    print(f"{'network':40s} {'test set':18s} {'disk recall':>11s} {'bulge recall':>12s}   gap to in-domain "
          "(disk, bulge)")
    for label, by_set in results.items():
        home = by_set["in-domain test"]
        for name, values in by_set.items():
            gap = "" if name == "in-domain test" else \
                f"   {home['disk'] - values['disk']:+.3f}, {home['bulge'] - values['bulge']:+.3f}"
            print(f"{label:40s} {name:18s} {values['disk']:11.3f} {values['bulge']:12.3f}{gap}")
    if arguments.output:
        with open(arguments.output, "w", encoding="utf-8") as stream:
            json.dump({"arguments": vars(arguments), "results": results}, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
