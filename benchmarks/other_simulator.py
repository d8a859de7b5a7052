"""Another simulator of bulge + disk galaxies: GalSim, a Moffat PSF, Gaussian sky noise, other size ranges.

GaMorNet should learn on any simulator, not only on :mod:`gamornet.training.simulate`
(an Airy + Gaussian PSF for CANDELS, Poisson noise of galaxy and sky plus read
noise). This one differs on purpose, as a new survey's simulator would:

- PSF: a Moffat profile (Moffat 1969), beta drawn in 2.5-4.5 and FWHM in
  0.14-0.26 arcsec for each galaxy (the project's is one Airy + Gaussian of
  0.18 arcsec);
- noise: Gaussian sky noise only, of the same standard deviation in every
  pixel (``pixel_noise`` counts), already sky-subtracted (the project's adds the
  galaxy's Poisson noise and read noise);
- sizes: disk half-light radii 0.2-1.6 arcsec and bulge half-light radii
  0.08-0.8 arcsec, log-uniform (the project's: 0.15-1.2 and 0.06-0.6), disk
  axis ratios 0.25-1, centres within 1.5 pixels of the cutout's centre;
- the bulge a de Vaucouleurs profile, the disk an exponential, and L_B/L_T
  uniform in [0, 1], labelled by the paper's rule (disk below 0.45, bulge
  above 0.55; :func:`gamornet.presets.labels_from_bulge_to_total`);
- CANDELS-like cutouts of 0.06 arcsec pixels, 83 x 83 by default, and H
  magnitudes 19-23.5 with the F160W zero point of 25.95 for 1 count/s over 3000 s.

Each galaxy's integrated S/N is the matched-filter (optimal) signal-to-noise
of its noiseless image: sqrt(sum of the squared pixel values) / ``pixel_noise``
(the definition of GalSim's ``addNoiseSNR``).

Importable (``benchmarks/own_simulator.py`` and the tests use
:func:`simulate_other`); run as a script, it draws a few galaxies and prints
their S/N range::

    python benchmarks/other_simulator.py --n 20
"""

import argparse
import csv
import math
import os

import numpy as np

__all__ = ["PIXEL_SCALE", "simulate_other", "write_fits_catalogue"]

#: Pixel size (arcsec).
PIXEL_SCALE = 0.06
#: Counts of a source of magnitude m: 10 ** (-0.4 (m - ZERO_POINT)) * EXPOSURE.
ZERO_POINT = 25.95
EXPOSURE = 3000.0

TABLE_DTYPE = np.dtype([("index", np.int64), ("bulge_to_total", np.float64), ("magnitude", np.float64),
                        ("disk_radius", np.float64), ("bulge_radius", np.float64), ("psf_fwhm", np.float64),
                        ("psf_beta", np.float64), ("snr", np.float64), ("label", np.int64)])  # fmt: skip


def _log_uniform(rng, low, high):
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _draw_one(galsim, rng, size, magnitude_range, pixel_noise):
    """(noiseless image, noisy image, table values) of one galaxy."""
    bulge_to_total = rng.uniform(0.0, 1.0)
    magnitude = rng.uniform(*magnitude_range)
    flux = 10.0 ** (-0.4 * (magnitude - ZERO_POINT)) * EXPOSURE
    disk_radius, bulge_radius = _log_uniform(rng, 0.2, 1.6), _log_uniform(rng, 0.08, 0.8)
    angle = rng.uniform(0.0, 180.0)
    disk = galsim.Exponential(half_light_radius=disk_radius, flux=(1.0 - bulge_to_total) * flux)
    bulge = galsim.DeVaucouleurs(half_light_radius=bulge_radius, flux=bulge_to_total * flux)
    disk = disk.shear(q=rng.uniform(0.25, 1.0), beta=angle * galsim.degrees)
    bulge = bulge.shear(q=rng.uniform(0.6, 1.0), beta=(angle + rng.uniform(-15.0, 15.0)) * galsim.degrees)
    fwhm, beta = rng.uniform(0.14, 0.26), rng.uniform(2.5, 4.5)
    psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    profile = galsim.Convolve(galsim.Add([disk, bulge]), psf)
    image = galsim.ImageD(size, size, scale=PIXEL_SCALE)
    profile.drawImage(image=image, offset=tuple(rng.uniform(-1.5, 1.5, size=2)))
    clean = image.array.astype(np.float64)
    noisy = clean + rng.normal(0.0, pixel_noise, size=clean.shape)
    snr = math.sqrt(float(np.sum(clean**2))) / pixel_noise
    return clean, noisy, (bulge_to_total, magnitude, disk_radius, bulge_radius, fwhm, beta, snr)


def simulate_other(n_galaxies, seed=0, size=83, magnitude_range=(19.0, 23.5), pixel_noise=120.0):
    """Draw galaxies with this simulator.

    Parameters
    ----------
    n_galaxies : int
        How many.
    seed : int
        The seed: the same seed and arguments give the same galaxies.
    size : int
        Cutout side (pixels of 0.06 arcsec).
    magnitude_range : (float, float)
        Total H magnitudes, drawn uniformly.
    pixel_noise : float
        Standard deviation of the Gaussian sky noise (counts per pixel).

    Returns
    -------
    images : numpy.ndarray of float32, shape (n, size, size, 1)
        Sky-subtracted images with noise.
    table : numpy.ndarray of dtype TABLE_DTYPE
        Per galaxy: bulge_to_total, magnitude, disk_radius, bulge_radius
        (arcsec), psf_fwhm (arcsec), psf_beta, snr (integrated, matched filter)
        and label (0 disk, 1 indeterminate, 2 bulge).
    """
    import galsim

    from gamornet.presets import labels_from_bulge_to_total

    if isinstance(n_galaxies, bool) or not isinstance(n_galaxies, int) or n_galaxies < 1:
        raise ValueError(f"n_galaxies must be a positive integer. Received: {n_galaxies!r}")
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"size must be an integer of at least 16 pixels. Received: {size!r}")
    rng = np.random.default_rng(seed)
    images = np.empty((n_galaxies, size, size, 1), dtype=np.float32)
    table = np.zeros(n_galaxies, dtype=TABLE_DTYPE)
    for index in range(n_galaxies):
        _, noisy, values = _draw_one(galsim, rng, size, magnitude_range, pixel_noise)
        images[index, :, :, 0] = noisy
        table[index] = (index,) + values + (0,)
    table["label"] = np.argmax(labels_from_bulge_to_total(table["bulge_to_total"]), axis=1)
    return images, table


def write_fits_catalogue(images, table, folder, name="catalogue.csv"):
    """Write each image as a FITS file in ``folder`` and a CSV catalogue (path, label, magnitude, snr,
    bulge_to_total) of them, for ``gamornet train`` and ``gamornet predict``; return the catalogue's path."""
    from astropy.io import fits

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label", "magnitude", "snr", "bulge_to_total"])
        for image, row in zip(images, table):
            file_name = f"galaxy_{int(row['index']):06d}.fits"
            fits.writeto(os.path.join(folder, file_name), image[:, :, 0], overwrite=True)
            writer.writerow([file_name, ("disk", "indeterminate", "bulge")[int(row["label"])],
                             f"{row['magnitude']:.4f}", f"{row['snr']:.3f}", f"{row['bulge_to_total']:.4f}"])
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20, help="galaxies to draw (default: 20)")
    parser.add_argument("--size", type=int, default=83, help="cutout side in pixels (default: 83)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    images, table = simulate_other(args.n, args.seed, args.size)
    counts = np.bincount(table["label"], minlength=3)
    print(f"{args.n} galaxies of {args.size} x {args.size} pixels: {counts[0]} disks, {counts[1]} indeterminate, "
          f"{counts[2]} bulges; integrated S/N {table['snr'].min():.1f} to {table['snr'].max():.1f} "
          f"(median {np.median(table['snr']):.1f}); peak pixel median {np.median(images.max(axis=(1, 2, 3))):.1f}")


if __name__ == "__main__":
    main()
