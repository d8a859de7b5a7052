"""Simulated bulge + disk galaxies with GalSim, for training GaMorNet from scratch.

Ghosh et al. (2020, ApJ 895, 112; Sec. 3) trained GaMorNet on galaxies
simulated with GALFIT: a bulge (Sérsic index n = 4) plus a disk (exponential,
n = 1), each with its own size, axis ratio and position angle, convolved with
the survey's point-spread function (PSF), with the survey's sky background and
Poisson noise, spanning bulge-to-total light ratios L_B/L_T from 0 to 1. This
module draws such galaxies with GalSim (Rowe et al. 2015, Astronomy and
Computing 10, 121), the field's standard galaxy image simulator.

Two survey presets, :data:`SURVEY_PRESETS`, describe the two data sets of the
paper (their instrument numbers and parameter ranges, with sources, are listed
in :class:`SurveyPreset`):

- ``'SDSS'``: 167 x 167 pixels of 0.396 arcsec, g band, z ~ 0;
- ``'CANDELS'``: 83 x 83 pixels of 0.06 arcsec, HST WFC3/IR F160W (H band), z ~ 1.

Every galaxy has its own random seed derived from the master seed and the
galaxy's index, so a simulation is reproducible and does not depend on the
number of worker processes, and galaxy ``i`` is the same whatever the number
of galaxies simulated.

GalSim is an optional dependency: ``pip install gamornet[sim]``.

Examples
--------
>>> from gamornet.training.simulate import simulate_galaxies
>>> from gamornet.presets import labels_from_bulge_to_total
>>> images, parameters = simulate_galaxies(100, "CANDELS", seed=1)  # doctest: +SKIP
>>> labels = labels_from_bulge_to_total(parameters["bulge_to_total"])  # doctest: +SKIP
"""

import concurrent.futures
import dataclasses
import math
import multiprocessing
import numbers
import os

import numpy as np

from gamornet._utils import checks as _checks
from gamornet._utils.atomic import atomic_path, atomic_write
from gamornet._utils.checks import check_positive_int
from gamornet.presets import labels_from_bulge_to_total
from gamornet._utils.progress import progress_bar

__all__ = [
    "SURVEY_PRESETS",
    "PARAMETER_DTYPE",
    "SurveyPreset",
    "get_preset",
    "sample_parameters",
    "render_galaxy",
    "simulate_galaxies",
    "write_fits_cutouts",
    "write_parameter_table",
    "read_parameter_table",
]


def _import_galsim():
    try:
        import galsim
    except ImportError as error:
        raise ImportError(
            "gamornet.training.simulate needs GalSim to draw galaxies, and GalSim is not installed. "
            "Install the simulation extra with: pip install 'gamornet[sim]' (or pip install galsim)"
        ) from error
    return galsim


def _check_range(value, name, low=-math.inf, high=math.inf, strictly_positive=False):
    try:
        start, stop = (float(bound) for bound in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high). Received: {name}={value!r}") from None
    lowest_ok = start > 0 if strictly_positive else start >= low
    if not (np.isfinite(start) and np.isfinite(stop) and lowest_ok and start <= stop <= high):
        allowed = f"{'0 < ' if strictly_positive else f'{low} <= '}low <= high{f' <= {high}' if high < math.inf else ''}"
        raise ValueError(f"{name} must be a pair (low, high) with {allowed}. Received: {name}={value!r}")


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number. Received: {name}={value!r}")


def _check_preset(preset):
    shape = preset.shape
    if not (
        isinstance(shape, tuple)
        and len(shape) == 2
        and all(isinstance(size, numbers.Integral) and not isinstance(size, bool) and size >= 8 for size in shape)
    ):
        raise ValueError(f"shape must be a tuple (x, y) of two ints of at least 8 pixels. Received: shape={shape!r}")
    for name in ("pixel_scale", "psf_fwhm", "exposure_time", "gain"):
        _check_positive(getattr(preset, name), name)
    for name in ("zero_point", "sky_brightness"):
        if not np.isfinite(getattr(preset, name)):
            raise ValueError(f"{name} must be a finite number of magnitudes. Received: {getattr(preset, name)!r}")
    for name in ("read_noise", "position_angle_misalignment", "centre_offset"):
        value = getattr(preset, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a number >= 0. Received: {name}={value!r}")
    if preset.psf not in ("kolmogorov", "airy"):
        raise ValueError(f"psf must be 'kolmogorov' or 'airy'. Received: psf={preset.psf!r}")
    if preset.psf == "airy":
        for name in ("psf_wavelength", "psf_diameter", "psf_jitter_fwhm"):
            _check_positive(getattr(preset, name), name)
        if not 0 <= preset.psf_obscuration < 1:
            raise ValueError(f"psf_obscuration must be in [0, 1). Received: {preset.psf_obscuration!r}")
    _check_range(preset.magnitude_range, "magnitude_range")
    _check_range(preset.bulge_to_total_range, "bulge_to_total_range", 0.0, 1.0)
    _check_range(preset.disk_radius_range, "disk_radius_range", strictly_positive=True)
    _check_range(preset.bulge_radius_range, "bulge_radius_range", strictly_positive=True)
    _check_range(preset.disk_axis_ratio_range, "disk_axis_ratio_range", high=1.0, strictly_positive=True)
    _check_range(preset.bulge_axis_ratio_range, "bulge_axis_ratio_range", high=1.0, strictly_positive=True)


@dataclasses.dataclass(frozen=True)
class SurveyPreset:
    """A survey's instrument and the ranges its simulated galaxies are drawn from.

    Every range is ``(low, high)`` and sampled uniformly, except the two
    half-light radii, which are sampled uniformly in their logarithm (sizes
    spread over a decade). Change any of them with :func:`dataclasses.replace`,
    e.g. ``dataclasses.replace(get_preset('CANDELS'), magnitude_range=(19, 22))``.

    Parameters
    ----------
    name : str
        The preset's name.
    shape : tuple of int
        Cutout size (x, y) in pixels.
    pixel_scale : float
        Pixel size (arcsec).
    band : str
        The band the preset imitates (for headers and tables).
    psf : {'kolmogorov', 'airy'}
        ``'kolmogorov'``: seeing-limited ground-based PSF of full width at half
        maximum ``psf_fwhm``. ``'airy'``: a diffraction-limited telescope
        (``psf_wavelength``, ``psf_diameter``, ``psf_obscuration``) convolved
        with a Gaussian of FWHM ``psf_jitter_fwhm`` (the detector's native
        pixels, charge diffusion and the drizzle kernel).
    psf_fwhm : float
        The PSF's full width at half maximum (arcsec), before the output
        pixel. For ``'airy'`` it is what the Airy and jitter give, and only
        documents it.
    zero_point : float
        AB magnitude of a source giving 1 ADU per second.
    exposure_time : float
        Exposure time (s).
    gain : float
        Detector gain (electrons per ADU).
    sky_brightness : float
        Sky surface brightness (AB mag per arcsec^2).
    read_noise : float
        Read noise per pixel (electrons, root mean square).
    magnitude_range : tuple of float
        Total apparent magnitude of the galaxy, bulge plus disk (AB mag).
    bulge_to_total_range : tuple of float
        Bulge-to-total light ratio L_B/L_T, within [0, 1].
    disk_radius_range, bulge_radius_range : tuple of float
        Half-light radius of the disk and of the bulge (arcsec).
    disk_axis_ratio_range, bulge_axis_ratio_range : tuple of float
        Projected axis ratio b/a of each component, within (0, 1].
    position_angle_misalignment : float
        The bulge's position angle differs from the disk's by up to this many
        degrees, either way.
    centre_offset : float
        The galaxy's centre is displaced from the cutout's centre by up to this
        many pixels along each axis.
    """

    name: str
    shape: tuple
    pixel_scale: float
    band: str
    psf: str
    psf_fwhm: float
    zero_point: float
    exposure_time: float
    gain: float
    sky_brightness: float
    read_noise: float
    magnitude_range: tuple
    bulge_to_total_range: tuple = (0.0, 1.0)
    disk_radius_range: tuple = (1.0, 10.0)
    bulge_radius_range: tuple = (0.5, 5.0)
    disk_axis_ratio_range: tuple = (0.2, 1.0)
    bulge_axis_ratio_range: tuple = (0.5, 1.0)
    position_angle_misalignment: float = 10.0
    centre_offset: float = 1.0
    psf_wavelength: float = 0.0
    psf_diameter: float = 0.0
    psf_obscuration: float = 0.0
    psf_jitter_fwhm: float = 0.0

    def __post_init__(self):
        _check_preset(self)

    @property
    def sky_level(self):
        """Sky background per pixel (ADU over the exposure)."""
        flux_per_arcsec2 = 10.0 ** (-0.4 * (self.sky_brightness - self.zero_point)) * self.exposure_time
        return flux_per_arcsec2 * self.pixel_scale**2

    def flux_of(self, magnitude):
        """Total flux (ADU over the exposure) of a source of AB magnitude ``magnitude``."""
        return 10.0 ** (-0.4 * (np.asarray(magnitude, dtype=np.float64) - self.zero_point)) * self.exposure_time

    def noise_per_pixel(self):
        """Standard deviation (ADU) of a blank, sky-subtracted pixel: sky Poisson noise and read noise."""
        return math.sqrt(self.sky_level * self.gain + self.read_noise**2) / self.gain


#: SDSS, g band, z ~ 0 (Ghosh et al. 2020, Sec. 3: ~100,000 simulated SDSS g-band galaxies).
#:
#: - 167 x 167 pixels of 0.396 arcsec: the SDSS camera (Gunn et al. 1998, AJ 116, 3040) and the cutouts of
#:   Ghosh et al. (2020).
#: - PSF: Kolmogorov (seeing-limited), FWHM 1.4 arcsec, the median g-band seeing of SDSS imaging
#:   (Stoughton et al. 2002, AJ 123, 485; Abazajian et al. 2009, ApJS 182, 543).
#: - Zero point 24.2 mag for 1 ADU/s: the typical g-band photometric zero point ``aa`` ~ -24.4 of the
#:   SDSS DR7 ``tsField`` files, with the extinction term ``kk * airmass`` ~ 0.2 at airmass 1.2; exposure 53.9 s
#:   (the drift-scan time per band, Gunn et al. 1998, 2006); gain 4.7 e-/ADU (the camera's gains span about
#:   3.3-5.2 e-/ADU by camera column); read noise 5 e- (dark-current and read-noise variance of a few DN^2).
#:   With these, 1 nanomaggy (22.5 mag) is ~250 ADU, close to the g-band ``nmgypercount`` of SDSS frames.
#: - Sky 21.9 mag/arcsec^2 in g: the dark-sky brightness at Apache Point (Stoughton et al. 2002).
#: - Galaxies: g = 14-18 mag (the SDSS main galaxy sample reaches r = 17.77, Strauss et al. 2002, AJ 124,
#:   1810, i.e. g ~ 18.5); disk half-light radii 1.5-10 arcsec and bulge half-light radii 0.5-5 arcsec
#:   (the range of the bulge+disk decompositions of SDSS galaxies by Simard et al. 2011, ApJS 196, 11, for
#:   z ~ 0.02-0.1).
SDSS = SurveyPreset(
    name="SDSS",
    shape=(167, 167),
    pixel_scale=0.396,
    band="SDSS g",
    psf="kolmogorov",
    psf_fwhm=1.4,
    zero_point=24.2,
    exposure_time=53.9,
    gain=4.7,
    sky_brightness=21.9,
    read_noise=5.0,
    magnitude_range=(14.0, 18.0),
    disk_radius_range=(1.5, 10.0),
    bulge_radius_range=(0.5, 5.0),
)

#: CANDELS, HST WFC3/IR F160W (H band), z ~ 1 (Ghosh et al. 2020, Sec. 3: simulated CANDELS H-band galaxies).
#:
#: - 83 x 83 pixels of 0.06 arcsec: the drizzled CANDELS mosaics (Koekemoer et al. 2011, ApJS 197, 36) and the
#:   cutouts of Ghosh et al. (2020).
#: - PSF: the Airy pattern of HST (2.4 m, central obscuration 0.33) at 1.545 um, convolved with a Gaussian of
#:   FWHM 0.1335 arcsec for the native 0.13 arcsec pixels, charge diffusion and drizzling, giving the 0.18 arcsec
#:   FWHM measured on the F160W mosaics (van der Wel et al. 2012, ApJS 203, 24).
#: - Zero point 25.95 AB mag for 1 e-/s (F160W; WFC3 Instrument Handbook; Koekemoer et al. 2011); images in
#:   electrons (gain 1 e-/ADU, as the mosaics are in e-/s); read noise 20 e- per drizzled pixel (several reads
#:   of ~15 e- combined); exposure 3000 s, which with the sky below gives a 5-sigma point-source depth of
#:   ~27.4 mag, between the CANDELS Wide (~27.0) and Deep (~27.7) depths (Grogin et al. 2011, ApJS 197, 35).
#: - Sky 22.3 AB mag/arcsec^2: the zodiacal light in F160W at moderate ecliptic latitude (about 0.6 e-/s per
#:   native 0.13 arcsec pixel; WFC3 Instrument Handbook, Sec. 9).
#: - Galaxies: H = 19-24 mag (structural parameters of CANDELS galaxies are reliable to H ~ 24, van der Wel
#:   et al. 2012); disk half-light radii 0.15-1.2 arcsec and bulge half-light radii 0.06-0.6 arcsec (1-10 kpc
#:   and 0.5-5 kpc at z ~ 1; van der Wel et al. 2014, ApJ 788, 28).
CANDELS = SurveyPreset(
    name="CANDELS",
    shape=(83, 83),
    pixel_scale=0.06,
    band="HST WFC3/IR F160W",
    psf="airy",
    psf_fwhm=0.18,
    zero_point=25.95,
    exposure_time=3000.0,
    gain=1.0,
    sky_brightness=22.3,
    read_noise=20.0,
    magnitude_range=(19.0, 24.0),
    disk_radius_range=(0.15, 1.2),
    bulge_radius_range=(0.06, 0.6),
    psf_wavelength=1545.0,
    psf_diameter=2.4,
    psf_obscuration=0.33,
    psf_jitter_fwhm=0.1335,
)

#: The two survey presets, by name.
SURVEY_PRESETS = {"SDSS": SDSS, "CANDELS": CANDELS}

#: Fields of the parameter table returned by :func:`simulate_galaxies`.
#:
#: Sizes in arcsec, angles in degrees counter-clockwise from the +y axis (the GALFIT convention), positions in
#: FITS pixel coordinates (the first pixel's centre is 1), fluxes in ADU over the exposure, sky in ADU per pixel.
PARAMETER_DTYPE = np.dtype(
    [
        ("index", np.int64),
        ("bulge_to_total", np.float64),
        ("magnitude", np.float64),
        ("disk_magnitude", np.float64),
        ("bulge_magnitude", np.float64),
        ("disk_flux", np.float64),
        ("bulge_flux", np.float64),
        ("disk_half_light_radius", np.float64),
        ("bulge_half_light_radius", np.float64),
        ("disk_axis_ratio", np.float64),
        ("bulge_axis_ratio", np.float64),
        ("disk_position_angle", np.float64),
        ("bulge_position_angle", np.float64),
        ("x_centre", np.float64),
        ("y_centre", np.float64),
        ("sky_level", np.float64),
        ("label", np.int64),
    ]
)


def get_preset(preset, shape=None):
    """Resolve a survey preset by name, optionally with another cutout size.

    Parameters
    ----------
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        A preset name or a preset.
    shape : tuple of int, optional
        Cutout size (x, y) in pixels, replacing the preset's. The pixel scale
        stays the same, so the field of view changes. A 3-tuple (x, y, 1), as
        GaMorNet's ``input_shape``, is accepted too.

    Returns
    -------
    SurveyPreset

    Raises
    ------
    ValueError
        An unknown preset name, or a shape that is not two ints >= 8 (and a
        single band).
    TypeError
        Neither a name nor a :class:`SurveyPreset`.
    """
    if isinstance(preset, str):
        if preset not in SURVEY_PRESETS:
            raise ValueError(f"preset must be 'SDSS', 'CANDELS' or a SurveyPreset. Received: preset={preset!r}")
        preset = SURVEY_PRESETS[preset]
    elif not isinstance(preset, SurveyPreset):
        raise TypeError(
            "preset must be 'SDSS', 'CANDELS' or a SurveyPreset. "
            f"Received an object of type {type(preset).__name__}: {preset!r}"
        )
    if shape is not None:
        values = tuple(shape) if isinstance(shape, (tuple, list)) else shape
        if isinstance(values, tuple) and len(values) == 3 and values[2] == 1:
            values = values[:2]
        if not isinstance(values, tuple):
            raise ValueError(f"shape must be a tuple (x, y) of two ints of at least 8 pixels. Received: shape={shape!r}")
        preset = dataclasses.replace(preset, shape=tuple(values))
    return preset


# --------------------------------------------------------------------------- seeds and parameters


def _galaxy_seed_sequence(seed, index):
    """The seed sequence of galaxy ``index``: it depends on the master seed and the index only."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(int(index),))


def _sample_one(preset, seed, index):
    """The parameters of galaxy ``index`` and the integer seed of its noise."""
    sequence = _galaxy_seed_sequence(seed, index)
    rng = np.random.default_rng(sequence)
    row = np.zeros((), dtype=PARAMETER_DTYPE)
    bulge_to_total = rng.uniform(*preset.bulge_to_total_range)
    magnitude = rng.uniform(*preset.magnitude_range)
    total_flux = float(preset.flux_of(magnitude))
    disk_radius = math.exp(rng.uniform(*np.log(preset.disk_radius_range)))
    bulge_radius = math.exp(rng.uniform(*np.log(preset.bulge_radius_range)))
    disk_axis_ratio = rng.uniform(*preset.disk_axis_ratio_range)
    bulge_axis_ratio = rng.uniform(*preset.bulge_axis_ratio_range)
    disk_angle = rng.uniform(-90.0, 90.0)
    misalignment = rng.uniform(-1.0, 1.0) * preset.position_angle_misalignment
    offset = rng.uniform(-1.0, 1.0, size=2) * preset.centre_offset
    noise_seed = int(rng.integers(0, 2**63 - 1))
    row["index"] = index
    row["bulge_to_total"] = bulge_to_total
    row["magnitude"] = magnitude
    row["disk_flux"] = (1.0 - bulge_to_total) * total_flux
    row["bulge_flux"] = bulge_to_total * total_flux
    with np.errstate(divide="ignore"):
        # A component without light has an infinite magnitude: written as such, never used to draw.
        row["disk_magnitude"] = magnitude - 2.5 * np.log10(1.0 - bulge_to_total) if bulge_to_total < 1 else np.inf
        row["bulge_magnitude"] = magnitude - 2.5 * np.log10(bulge_to_total) if bulge_to_total > 0 else np.inf
    row["disk_half_light_radius"] = disk_radius
    row["bulge_half_light_radius"] = bulge_radius
    row["disk_axis_ratio"] = disk_axis_ratio
    row["bulge_axis_ratio"] = bulge_axis_ratio
    row["disk_position_angle"] = disk_angle
    row["bulge_position_angle"] = disk_angle + misalignment
    row["x_centre"] = (preset.shape[0] + 1) / 2.0 + offset[0]
    row["y_centre"] = (preset.shape[1] + 1) / 2.0 + offset[1]
    row["sky_level"] = preset.sky_level
    row["label"] = int(np.argmax(labels_from_bulge_to_total(bulge_to_total)[0]))
    return row, noise_seed


def sample_parameters(n_galaxies, preset="CANDELS", seed=0, shape=None):
    """Draw the parameters of ``n_galaxies`` galaxies, without drawing images.

    Parameters
    ----------
    n_galaxies : int
        Number of galaxies.
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        The survey and parameter ranges (see :class:`SurveyPreset`).
    seed : int
        Master seed. Galaxy ``i`` depends only on ``seed`` and ``i``.
    shape : tuple of int, optional
        Cutout size (x, y), replacing the preset's.

    Returns
    -------
    numpy.ndarray
        A structured array of dtype :data:`PARAMETER_DTYPE`, one row per galaxy.
    """
    n_galaxies = check_positive_int(n_galaxies, "n_galaxies")
    preset = get_preset(preset, shape)
    seed = _checks.check_seed(seed)
    table = np.zeros(n_galaxies, dtype=PARAMETER_DTYPE)
    for index in range(n_galaxies):
        table[index] = _sample_one(preset, seed, index)[0]
    return table


# --------------------------------------------------------------------------- drawing


def _psf(galsim, preset):
    if preset.psf == "kolmogorov":
        return galsim.Kolmogorov(fwhm=preset.psf_fwhm)
    airy = galsim.Airy(
        lam=preset.psf_wavelength,
        diam=preset.psf_diameter,
        obscuration=preset.psf_obscuration,
        scale_unit=galsim.arcsec,
    )
    return galsim.Convolve(airy, galsim.Gaussian(fwhm=preset.psf_jitter_fwhm))


def _component(galsim, kind, flux, radius, axis_ratio, position_angle):
    profile_class = galsim.DeVaucouleurs if kind == "bulge" else galsim.Exponential
    profile = profile_class(half_light_radius=radius, flux=flux)
    # GalSim measures beta from +x; the table's position angles, as GALFIT's, from +y.
    return profile.shear(q=axis_ratio, beta=(position_angle + 90.0) * galsim.degrees)


def render_galaxy(parameters, preset="CANDELS", shape=None, component="both", noise_seed=None,
                  subtract_sky=True, psf=True):
    """Draw one galaxy from a row of the parameter table.

    Parameters
    ----------
    parameters : numpy.void
        One row of a table of dtype :data:`PARAMETER_DTYPE`.
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        The survey (pixel scale, PSF, sky, noise).
    shape : tuple of int, optional
        Cutout size (x, y), replacing the preset's.
    component : {'both', 'bulge', 'disk', 'point'}
        Draw the whole galaxy, one component, or a point source of the
        galaxy's total flux at the galaxy's centre (the PSF as imaged).
    noise_seed : int, optional
        Seed of the sky Poisson and read noise. None draws a noise-free image.
    subtract_sky : bool
        If True (the default), the sky level is subtracted, leaving its noise,
        as in sky-subtracted survey images. If False the sky stays in.
    psf : bool
        Convolve with the survey's PSF (default True).

    Returns
    -------
    numpy.ndarray of shape (y, x), float32
        The image in ADU, ``array[row, column]`` as in a FITS file.
    """
    galsim = _import_galsim()
    preset = get_preset(preset, shape)
    if component not in ("both", "bulge", "disk", "point"):
        raise ValueError(f"component must be 'both', 'bulge', 'disk' or 'point'. Received: component={component!r}")
    parts = []
    if component == "point":
        parts.append(galsim.DeltaFunction(flux=float(parameters["disk_flux"] + parameters["bulge_flux"])))
    for kind in ("bulge", "disk"):
        flux = float(parameters[f"{kind}_flux"])
        if component in (kind, "both") and flux > 0:
            parts.append(
                _component(
                    galsim,
                    kind,
                    flux,
                    float(parameters[f"{kind}_half_light_radius"]),
                    float(parameters[f"{kind}_axis_ratio"]),
                    float(parameters[f"{kind}_position_angle"]),
                )
            )
    nx, ny = preset.shape
    image = galsim.ImageD(nx, ny, scale=preset.pixel_scale)
    if parts:
        profile = galsim.Add(parts) if len(parts) > 1 else parts[0]
        if psf:
            profile = galsim.Convolve(profile, _psf(galsim, preset))
        offset = (float(parameters["x_centre"]) - (nx + 1) / 2.0, float(parameters["y_centre"]) - (ny + 1) / 2.0)
        profile.drawImage(image=image, offset=offset)
    array = image.array.astype(np.float64)
    if noise_seed is not None:
        array = _add_noise(array, preset, np.random.default_rng(noise_seed))
    if not subtract_sky:
        array += preset.sky_level
    return array.astype(np.float32)


def _add_noise(array, preset, rng):
    """Poisson noise of galaxy plus sky, in electrons, and Gaussian read noise; returns sky-subtracted ADU."""
    electrons = np.clip((array + preset.sky_level) * preset.gain, 0.0, None)
    noisy = rng.poisson(electrons).astype(np.float64)
    if preset.read_noise > 0:
        noisy += rng.normal(0.0, preset.read_noise, size=array.shape)
    return noisy / preset.gain - preset.sky_level


def _simulate_chunk(preset, seed, indices, subtract_sky):
    """Worker: the images and parameter rows of galaxies ``indices``."""
    nx, ny = preset.shape
    images = np.empty((len(indices), ny, nx), dtype=np.float32)
    table = np.zeros(len(indices), dtype=PARAMETER_DTYPE)
    for position, index in enumerate(indices):
        row, noise_seed = _sample_one(preset, seed, index)
        table[position] = row
        images[position] = render_galaxy(row, preset, noise_seed=noise_seed, subtract_sky=subtract_sky)
    return images, table


def _default_workers():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


#: Below this many galaxies per worker, starting worker processes costs more than it saves.
_MIN_GALAXIES_PER_WORKER = 32


def simulate_galaxies(n_galaxies, preset="CANDELS", seed=0, shape=None, n_workers=None, progress=True,
                      subtract_sky=True):
    """Simulate bulge + disk galaxies: images and their true parameters.

    Each galaxy is a bulge (de Vaucouleurs, Sérsic n = 4) plus a disk
    (exponential), each sheared to its own axis ratio and position angle,
    convolved with the survey's PSF and drawn into pixels, with the survey's
    sky background, Poisson noise and read noise (Ghosh et al. 2020, Sec. 3).
    The parameters are drawn from the ranges of ``preset`` (see
    :class:`SurveyPreset`); the bulge-to-total light ratio L_B/L_T is uniform
    over ``preset.bulge_to_total_range`` (0 to 1 by default).

    Parameters
    ----------
    n_galaxies : int
        Number of galaxies.
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        The survey and parameter ranges.
    seed : int
        Master seed (>= 0). Galaxy ``i`` depends only on ``seed`` and ``i``:
        the result is the same for any ``n_workers``, and the first ``k``
        galaxies of a larger simulation are those of a simulation of ``k``.
    shape : tuple of int, optional
        Cutout size (x, y) in pixels, replacing the preset's; the pixel scale
        stays the preset's. ``(x, y, 1)`` is accepted too.
    n_workers : int, optional
        Worker processes. None uses every core available; small simulations
        run in this process.
    progress : bool
        Show a progress bar on standard error.
    subtract_sky : bool
        Subtract the sky level (its noise stays), as in sky-subtracted survey
        images (default True).

    Returns
    -------
    images : numpy.ndarray of shape (n, y, x, 1), float32
        The images in ADU (see ``preset.gain`` for electrons), ready for
        GaMorNet's ``input_shape`` (x, y, 1) when x == y.
    parameters : numpy.ndarray
        A structured array of dtype :data:`PARAMETER_DTYPE`: the true
        bulge-to-total ratio, magnitudes, fluxes, half-light radii, axis
        ratios, position angles, centre, sky level and the label of the
        paper's rule (0 disk, 1 indeterminate, 2 bulge;
        :func:`gamornet.presets.labels_from_bulge_to_total` gives one-hot labels).

    Raises
    ------
    ImportError
        GalSim is not installed (``pip install gamornet[sim]``).
    ValueError, TypeError
        Invalid arguments.

    Notes
    -----
    Worker processes are started with the ``'spawn'`` method (GalSim's OpenMP
    runtime and TensorFlow's thread pools do not survive a fork), so a script
    that runs with more than one worker must guard its top level with
    ``if __name__ == '__main__':``, as any multiprocessing program; or pass
    ``n_workers=1``.
    """
    n_galaxies = check_positive_int(n_galaxies, "n_galaxies")
    preset = get_preset(preset, shape)
    seed = _checks.check_seed(seed)
    if n_workers is None:
        n_workers = _default_workers()
    n_workers = check_positive_int(n_workers, "n_workers")
    _import_galsim()
    n_workers = max(1, min(n_workers, n_galaxies // _MIN_GALAXIES_PER_WORKER))
    nx, ny = preset.shape
    images = np.empty((n_galaxies, ny, nx, 1), dtype=np.float32)
    table = np.zeros(n_galaxies, dtype=PARAMETER_DTYPE)
    chunk_size = max(1, min(64, math.ceil(n_galaxies / (4 * n_workers))))
    chunks = [list(range(start, min(start + chunk_size, n_galaxies))) for start in range(0, n_galaxies, chunk_size)]
    done = 0
    with progress_bar(n_galaxies, f"Simulating {preset.name} galaxies", unit="images", enabled=progress) as bar:
        if n_workers == 1:
            for indices in chunks:
                chunk_images, chunk_table = _simulate_chunk(preset, seed, indices, subtract_sky)
                images[indices[0] : indices[-1] + 1, ..., 0] = chunk_images
                table[indices[0] : indices[-1] + 1] = chunk_table
                done += len(indices)
                bar.update(done)
        else:
            # Fresh interpreters ('spawn'): GalSim's OpenMP runtime, and TensorFlow's thread pools, do not
            # survive a fork. A script that calls this must therefore guard its top level with
            # ``if __name__ == '__main__':``, as for any multiprocessing program.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=context) as pool:
                futures = {
                    pool.submit(_simulate_chunk, preset, seed, indices, subtract_sky): indices for indices in chunks
                }
                for future in concurrent.futures.as_completed(futures):
                    indices = futures[future]
                    chunk_images, chunk_table = future.result()
                    images[indices[0] : indices[-1] + 1, ..., 0] = chunk_images
                    table[indices[0] : indices[-1] + 1] = chunk_table
                    done += len(indices)
                    bar.update(done)
    return images, table


# --------------------------------------------------------------------------- files

#: Columns of the parameter table file, in the order of the tutorial's ``sim_para.txt`` of GaMorNet 0.4.x
#: (disk first, then the bulge with the suffix ``_2``, then the sky), followed by the true L_B/L_T and label.
_TABLE_COLUMNS = (
    "sersic_idx", "R_e", "axis_ratio", "PA", "Inte_Mag", "x_pos", "y_pos",
    "sersic_idx_2", "R_e_2", "axis_ratio_2", "PA_2", "Inte_Mag_2", "x_pos_2", "y_pos_2",
    "sky_back", "bulge_to_total", "label",
)  # fmt: skip


def write_parameter_table(parameters, path, preset="CANDELS", shape=None):
    """Write a parameter table in the style of GaMorNet 0.4.x's ``sim_para.txt``.

    A whitespace-separated table: comment lines (``#``) that explain the
    columns, a header line ``#sersic_idx R_e ...``, then one row per galaxy in
    the order of the images. The disk's columns come first, then the bulge's
    (suffix ``_2``), the sky, and two columns the 0.4.x file did not have: the
    true L_B/L_T and the label (0 disk, 1 indeterminate, 2 bulge).

    Parameters
    ----------
    parameters : numpy.ndarray
        A table of dtype :data:`PARAMETER_DTYPE`.
    path : str
        The file to write (atomically).
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        The survey the galaxies were simulated for (for pixel units).
    shape : tuple of int, optional
        The cutout size used, if not the preset's.
    """
    preset = get_preset(preset, shape)
    parameters = _check_table(parameters)
    scale = preset.pixel_scale
    columns = [
        np.ones(len(parameters)), parameters["disk_half_light_radius"] / scale, parameters["disk_axis_ratio"],
        parameters["disk_position_angle"], parameters["disk_magnitude"], parameters["x_centre"],
        parameters["y_centre"], np.full(len(parameters), 4.0), parameters["bulge_half_light_radius"] / scale,
        parameters["bulge_axis_ratio"], parameters["bulge_position_angle"], parameters["bulge_magnitude"],
        parameters["x_centre"], parameters["y_centre"], parameters["sky_level"], parameters["bulge_to_total"],
        parameters["label"],
    ]  # fmt: skip
    header = [
        "#" * 100,
        f"# Parameters of {len(parameters)} simulated {preset.name} galaxies ({preset.band}; "
        f"{preset.shape[0]}x{preset.shape[1]} pixels of {preset.pixel_scale} arcsec), written by gamornet.training.simulate.",
        "# Each image has a disk and a bulge component. Row i describes output_img_i.fits (i from 0).",
        "# The _2 parameters are those of the bulge component.",
        "# sersic_idx --> Sersic index",
        "# R_e --> effective (half-light) radius, in pixels",
        "# axis_ratio --> projected axis ratio b/a",
        "# PA --> position angle, degrees counter-clockwise from the +y axis",
        f"# Inte_Mag --> integrated AB magnitude (zero point {preset.zero_point} for 1 ADU/s, "
        f"exposure {preset.exposure_time} s; inf for a component without light)",
        "# x_pos, y_pos --> centre of the galaxy in the image, FITS pixel coordinates (first pixel centre = 1)",
        "# sky_back --> sky level, ADU per pixel (subtracted from the images unless stated in their headers)",
        "# bulge_to_total --> true bulge-to-total light ratio L_B/L_T",
        "# label --> the rule of Ghosh et al. (2020): 0 disk (L_B/L_T < 0.45), 1 indeterminate, 2 bulge (> 0.55)",
        "#" * 100,
        "#" + " ".join(_TABLE_COLUMNS),
    ]
    with atomic_write(path, "w") as stream:
        stream.write("\n".join(header) + "\n")
        for values in zip(*columns):
            fields = [f"{value:.4f}" for value in values[:-1]] + [str(int(values[-1]))]
            stream.write(" ".join(fields) + "\n")


def read_parameter_table(path):
    """Read a table written by :func:`write_parameter_table` (or a 0.4.x ``sim_para.txt``).

    Returns
    -------
    numpy.ndarray
        A structured array whose field names are the file's column names
        (``R_e``, ``Inte_Mag``, ..., ``bulge_to_total``).

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        The file has no header line of column names, or rows of the wrong length.
    """
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    names = None
    rows = []
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            words = stripped.lstrip("#").split()
            if words and words[0] == "sersic_idx":
                names = words
            continue
        rows.append(stripped.split())
    if names is None:
        raise ValueError(f"{path!r} has no header line of column names (a comment line starting '#sersic_idx')")
    bad = [number for number, row in enumerate(rows) if len(row) != len(names)]
    if bad:
        raise ValueError(
            f"{path!r}: data row {bad[0]} has {len(rows[bad[0]])} values, but the header names {len(names)} columns"
        )
    dtype = [(name, np.int64 if name == "label" else np.float64) for name in names]
    table = np.zeros(len(rows), dtype=dtype)
    for name_index, name in enumerate(names):
        table[name] = [float(row[name_index]) for row in rows]
    return table


def _check_table(parameters):
    if not isinstance(parameters, np.ndarray) or parameters.dtype != PARAMETER_DTYPE or parameters.ndim != 1:
        raise TypeError(
            "parameters must be the 1-D parameter table returned by simulate_galaxies (dtype PARAMETER_DTYPE). "
            f"Received {type(parameters).__name__} of dtype {getattr(parameters, 'dtype', None)}"
        )
    return parameters


def write_fits_cutouts(images, parameters, folder, preset="CANDELS", shape=None, prefix="output_img_",
                       table_name="sim_para.txt", subtract_sky=True, progress=True):
    """Write each image to a FITS file and the parameters to a ``sim_para.txt``-style table.

    The files are ``<folder>/<prefix><i>.fits`` (``output_img_0.fits``, ...,
    as in the 0.4.x tutorial data) and ``<folder>/<table_name>``, each written
    atomically. Each FITS header records the survey, pixel scale, zero point,
    exposure, gain, sky level and the galaxy's true L_B/L_T and label.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, y, x, 1) or (n, y, x)
        The images from :func:`simulate_galaxies`.
    parameters : numpy.ndarray
        Their parameter table (dtype :data:`PARAMETER_DTYPE`).
    folder : str
        Output folder, created if missing.
    preset : {'SDSS', 'CANDELS'} or SurveyPreset
        The survey the images were simulated for.
    shape : tuple of int, optional
        The cutout size used, if not the preset's.
    prefix : str
        File name prefix of the images.
    table_name : str
        File name of the parameter table.
    subtract_sky : bool
        Whether the images are sky-subtracted (recorded in the headers).
    progress : bool
        Show a progress bar.

    Returns
    -------
    list of str
        The paths of the FITS files, in image order.

    Raises
    ------
    ValueError
        The images and the table differ in length, or the images are not 3-D or 4-D.
    OSError
        The folder cannot be created or written.
    """
    from astropy.io import fits

    preset = get_preset(preset, shape)
    parameters = _check_table(parameters)
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"images must have shape (n, y, x, 1) or (n, y, x). Received an array of shape {images.shape}")
    if len(images) != len(parameters):
        raise ValueError(f"There are {len(images)} images but {len(parameters)} rows of parameters")
    os.makedirs(folder, exist_ok=True)
    paths = []
    with progress_bar(len(images), "Writing FITS cutouts", unit="files", enabled=progress) as bar:
        for position, (image, row) in enumerate(zip(images, parameters)):
            header = fits.Header()
            header["SURVEY"] = (preset.name, "gamornet.training.simulate preset")
            header["BAND"] = (preset.band, "band imitated")
            header["BUNIT"] = ("ADU", "counts over the exposure")
            header["PIXSCALE"] = (preset.pixel_scale, "arcsec per pixel")
            header["MAGZP"] = (preset.zero_point, "AB mag of 1 ADU/s")
            header["EXPTIME"] = (preset.exposure_time, "s")
            header["GAIN"] = (preset.gain, "electrons per ADU")
            header["SKYLEVEL"] = (float(row["sky_level"]), "sky, ADU per pixel")
            header["SKYSUB"] = (bool(subtract_sky), "sky level subtracted")
            header["PSFFWHM"] = (preset.psf_fwhm, "PSF FWHM, arcsec")
            header["BT"] = (float(row["bulge_to_total"]), "true bulge-to-total light ratio")
            header["LABEL"] = (int(row["label"]), "0 disk, 1 indeterminate, 2 bulge")
            header["GALINDEX"] = (int(row["index"]), "index in the simulation")
            path = os.path.join(folder, f"{prefix}{position}.fits")
            with atomic_path(path, suffix=".fits") as temporary:
                fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=header).writeto(temporary, overwrite=True)
            paths.append(path)
            bar.update(position + 1)
    write_parameter_table(parameters, os.path.join(folder, table_name), preset)
    return paths
