"""Streaming image readers: FITS files, folders, globs, cubes, HDUs, .npy arrays, bad inputs, memory."""

import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from astropy.io import fits

from gamornet.io import images as io
from gamornet._utils.prefetch import prefetch

SHAPE = (12, 10, 1)  # non-square, so that a transposed image would not fit


def images(n, shape=SHAPE, seed=0):
    return np.random.default_rng(seed).normal(100.0, 10.0, size=(n,) + shape).astype(np.float32)


def write_fits(path, data, **header):
    hdu = fits.PrimaryHDU(data)
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return str(path)


def read_all(inputs, shape=SHAPE, batch_size=4, **options):
    batches = list(io.ImageReader(inputs, shape, batch_size=batch_size, **options))
    sources = [source for batch in batches for source in batch.sources]
    stacked = np.concatenate([batch.images for batch in batches]) if batches else None
    bad = [item for batch in batches for item in batch.bad]
    return batches, sources, stacked, bad


@pytest.fixture()
def fits_folder(tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    data = images(6)
    paths = [write_fits(folder / f"galaxy_{index:02d}.fits", data[index, :, :, 0]) for index in range(6)]
    (folder / "notes.txt").write_text("not an image")
    return folder, paths, data


# --------------------------------------------------------------------------- FITS files, folders, globs


def test_fits_files_stream_in_batches_in_order(fits_folder):
    folder, paths, data = fits_folder
    batches, sources, stacked, bad = read_all(paths, batch_size=4)
    assert [len(batch.sources) for batch in batches] == [4, 2]
    assert sources == paths and bad == []
    assert all(batch.images.dtype == np.float32 and batch.images.shape[1:] == SHAPE for batch in batches)
    np.testing.assert_array_equal(stacked, data)


def test_a_folder_reads_its_fits_files_in_name_order(fits_folder):
    folder, paths, data = fits_folder
    _, sources, stacked, _ = read_all([str(folder)])
    assert sources == paths
    np.testing.assert_array_equal(stacked, data)


def test_glob_patterns_and_mixed_inputs(fits_folder, tmp_path):
    folder, paths, data = fits_folder
    array = images(3, seed=5)
    np.save(tmp_path / "more.npy", array[..., 0])
    inputs = [str(folder / "galaxy_0[0-2].fits"), str(tmp_path / "more.npy"), paths[5]]
    _, sources, stacked, _ = read_all(inputs, batch_size=2)
    npy = str(tmp_path / "more.npy")
    assert sources == paths[:3] + [f"{npy}[0]", f"{npy}[1]", f"{npy}[2]", paths[5]]
    np.testing.assert_array_equal(stacked, np.concatenate([data[:3], array, data[5:]]))
    recursive = io.expand_inputs([str(tmp_path / "**" / "*.fits")])
    assert [path for _, path in recursive] == paths


def test_multiband_images_in_fits_plane_order_and_pixel_order(tmp_path):
    shape = (12, 10, 2)
    data = images(2, shape)
    planes = write_fits(tmp_path / "planes.fits", np.moveaxis(data[0], -1, 0))  # (ndim, x, y)
    pixels = write_fits(tmp_path / "pixels.fits", data[1])  # (x, y, ndim)
    _, sources, stacked, bad = read_all([planes, pixels], shape=shape)
    assert bad == [] and sources == [planes, pixels]
    np.testing.assert_array_equal(stacked, data)


def test_fits_scaling_is_applied(tmp_path):
    raw = np.arange(120, dtype=np.int16).reshape(12, 10)
    path = write_fits(tmp_path / "scaled.fits", raw, BSCALE=0.5, BZERO=1000.0)
    _, _, stacked, _ = read_all([path])
    np.testing.assert_allclose(stacked[0, :, :, 0], raw * 0.5 + 1000.0)


# --------------------------------------------------------------------------- cubes


def test_a_fits_cube_is_read_plane_by_plane(tmp_path):
    data = images(7)
    path = write_fits(tmp_path / "cube.fits", data[..., 0])
    reader = io.ImageReader([path], SHAPE, batch_size=3)
    assert reader.total == 1  # a FITS file counts one image until it is opened
    batches = list(reader)
    assert reader.total == 7
    assert [len(batch.sources) for batch in batches] == [3, 3, 1]
    assert [source for batch in batches for source in batch.sources] == [f"{path}[{i}]" for i in range(7)]
    np.testing.assert_array_equal(np.concatenate([batch.images for batch in batches]), data)


def test_a_multiband_cube(tmp_path):
    shape = (12, 10, 3)
    data = images(4, shape)
    path = write_fits(tmp_path / "cube.fits", np.moveaxis(data, -1, 1))  # (n, ndim, x, y)
    _, sources, stacked, _ = read_all([path], shape=shape, batch_size=3)
    assert sources == [f"{path}[{i}]" for i in range(4)]
    np.testing.assert_array_equal(stacked, data)


def test_ranges_of_an_array_and_of_a_cube(tmp_path):
    """'file[start:stop]' reads only those images, which keep the sources they have in the whole file."""
    data = images(10)
    array = str(tmp_path / "stack.npy")
    np.save(array, data)
    cube = write_fits(tmp_path / "cube.fits", data[..., 0])
    inputs = [f"{array}[3:7]", f"{array}[8:]", f"{array}[:2]", f"{array}[12:20]", f"{cube}[5:9]"]
    reader = io.ImageReader(inputs, SHAPE, batch_size=3)
    assert reader.total == 4 + 2 + 2 + 0 + 1  # the cube counts one image until it is opened
    assert reader.entries == [("npy", array)] * 4 + [("fits", cube)]
    _, sources, stacked, bad = read_all(inputs, batch_size=3)
    expected = [3, 4, 5, 6, 8, 9, 0, 1]
    assert sources == [f"{array}[{i}]" for i in expected] + [f"{cube}[{i}]" for i in range(5, 9)]
    np.testing.assert_array_equal(stacked, data[expected + [5, 6, 7, 8]])
    assert bad == []
    assert list(reader)[-1].sources[-1] == f"{cube}[8]" and reader.total == 12


def test_range_errors(tmp_path):
    array = str(tmp_path / "stack.npy")
    np.save(array, images(6))
    single = write_fits(tmp_path / "one.fits", images(1)[0, :, :, 0])
    with pytest.raises(ValueError, match=r"the range of '.*stack.npy\[5:2\]' ends before it starts: give "
                                         r"\[start:stop\] with start <= stop, such as '.*stack.npy\[0:4096\]'"):
        io.expand_inputs([f"{array}[5:2]"])
    with pytest.raises(FileNotFoundError, match=r"the pattern '.*missing.npy\[0:4\]' matches no files"):
        io.expand_inputs([str(tmp_path / "missing.npy[0:4]")])
    _, sources, _, bad = read_all([f"{single}[0:1]"], skip_bad=True)
    assert sources == [] and bad == [io.BadInput(f"{single}[0:1]", "a range of images was given, but the file "
                                                                    "holds a single image, not a cube")]
    # A range that reaches past the cut of a truncated file names the first image of the range it lacks.
    with open(array, "r+b") as stream:
        stream.truncate(stream.seek(0, 2) - 2 * 12 * 10 * 4)
    _, sources, _, bad = read_all([f"{array}[2:6]"], skip_bad=True)
    assert sources == [f"{array}[2]", f"{array}[3]"]
    assert bad[0].source == f"{array}[4]" and "ends within image 4" in bad[0].reason


def test_hdu_choice(tmp_path):
    first, second = images(2)
    hdus = fits.HDUList([
        fits.PrimaryHDU(),
        fits.BinTableHDU.from_columns([fits.Column(name="ra", format="E", array=np.zeros(2))]),
        fits.ImageHDU(first[..., 0]),
        fits.ImageHDU(second[..., 0]),
    ])
    path = str(tmp_path / "multi.fits")
    hdus.writeto(path)
    np.testing.assert_array_equal(read_all([path])[2], first[None])  # the first HDU with data
    np.testing.assert_array_equal(read_all([path], hdu=3)[2], second[None])
    cases = {
        0: "HDU 0 holds no data",
        1: "HDU 1 holds a BinTableHDU, not an image",
        7: r"the file has no HDU 7 \(it has 4, numbered from 0\)",
    }
    for hdu, reason in cases.items():
        _, sources, _, bad = read_all([path], hdu=hdu)
        assert sources == [] and len(bad) == 1 and bad[0].source == path
        assert re.search(reason, bad[0].reason), bad[0].reason
    with pytest.raises(ValueError, match="hdu must be a non-negative integer. Received: hdu=-1"):
        io.ImageReader([path], SHAPE, hdu=-1)


# --------------------------------------------------------------------------- .npy arrays


@pytest.mark.parametrize("layout", ["n,x,y", "n,x,y,ndim"])
@pytest.mark.parametrize("dtype", ["<f4", ">f8", "<i2"])
def test_npy_arrays(tmp_path, layout, dtype):
    data = np.round(images(9)).astype(dtype)
    stored = data[..., 0] if layout == "n,x,y" else data
    path = str(tmp_path / "stack.npy")
    np.save(path, stored)
    reader = io.ImageReader([path], SHAPE, batch_size=4)
    assert reader.total == 9
    batches = list(reader)
    assert [len(batch.sources) for batch in batches] == [4, 4, 1]
    assert [source for batch in batches for source in batch.sources] == [f"{path}[{i}]" for i in range(9)]
    np.testing.assert_array_equal(np.concatenate([batch.images for batch in batches]), data.astype(np.float32))


def test_fortran_ordered_npy(tmp_path):
    data = images(5)
    path = str(tmp_path / "fortran.npy")
    np.save(path, np.asfortranarray(data))
    np.testing.assert_array_equal(read_all([path], batch_size=2)[2], data)


def test_npy_windows_never_exceed_one_batch(tmp_path, monkeypatch):
    """The reader maps one batch of the file at a time, never the whole array."""
    path = str(tmp_path / "stack.npy")
    np.save(path, images(10))
    mapped = []
    original = np.memmap.__new__

    def spy(cls, filename, dtype=np.uint8, mode="r+", offset=0, shape=None, order="C"):
        mapped.append(shape)
        return original(cls, filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)

    reader = io.ImageReader([path], SHAPE, batch_size=3)
    monkeypatch.setattr(np.memmap, "__new__", staticmethod(spy))
    list(reader)
    assert mapped == [(3,) + SHAPE, (3,) + SHAPE, (3,) + SHAPE, (1,) + SHAPE]


_RSS_SCRIPT = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from gamornet.io import images as io
    reader = io.ImageReader([sys.argv[1]], (167, 167, 1), batch_size=64)
    batches = iter(reader)
    next(batches)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = 64 + sum(len(batch.sources) for batch in batches)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(count, (after - before) / 1024)
""")


@pytest.mark.parametrize("kind", ["npy", "cube"])
def test_streaming_keeps_resident_memory_flat(tmp_path, kind):
    """Reading a 200 MB stack grows the resident memory by far less than the stack."""
    n = 1800  # 1800 x 167 x 167 float32 = 200 MB
    if kind == "npy":
        path = str(tmp_path / "big.npy")
        stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 167, 167))
        for start in range(0, n, 200):
            stack[start : start + 200] = start
        stack.flush()
        del stack
    else:
        path = str(tmp_path / "big.fits")
        header = fits.Header({"SIMPLE": True, "BITPIX": -32, "NAXIS": 3, "NAXIS1": 167, "NAXIS2": 167, "NAXIS3": n})
        with open(path, "wb") as stream:
            stream.write(header.tostring().encode("ascii"))
            block = np.ones((200, 167, 167), dtype=">f4")
            for _ in range(n // 200):
                stream.write(block.tobytes())
            stream.write(b"\0" * (-stream.tell() % 2880))
    result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, path], capture_output=True, text=True, check=True)
    count, growth_mb = result.stdout.split()
    assert int(count) == n
    assert float(growth_mb) < 40, f"resident memory grew by {growth_mb} MB while reading a 200 MB {kind}"


# --------------------------------------------------------------------------- bad inputs


@pytest.fixture()
def bad_files(tmp_path):
    good = images(4)
    blank = np.full(SHAPE[:2], np.nan, dtype=np.float32)
    holes = good[2, :, :, 0].copy()
    holes[0, :3] = np.nan
    holes[5, 5] = np.inf
    truncated = tmp_path / "truncated.fits"
    write_fits(truncated, images(1)[0, :, :, 0])
    truncated.write_bytes(truncated.read_bytes()[:3000])
    paths = {
        "good0": write_fits(tmp_path / "a_good0.fits", good[0, :, :, 0]),
        "garbage": str(tmp_path / "b_garbage.fits"),
        "good1": write_fits(tmp_path / "c_good1.fits", good[1, :, :, 0]),
        "shape": write_fits(tmp_path / "d_shape.fits", np.zeros((10, 12), dtype=np.float32)),
        "blank": write_fits(tmp_path / "e_blank.fits", blank),
        "holes": write_fits(tmp_path / "f_holes.fits", holes),
        "truncated": str(truncated),
        "empty": write_fits(tmp_path / "h_empty.fits", None),
        "good3": write_fits(tmp_path / "i_good3.fits", good[3, :, :, 0]),
    }
    (tmp_path / "b_garbage.fits").write_bytes(b"this is not a FITS file" * 200)
    return paths, good


EXPECTED_REASONS = {
    "garbage": r"cannot be read as FITS \(.+\)",
    "shape": r"holds an image of shape \(10, 12\), but the network takes images of shape \(12, 10\) or "
             r"\(12, 10, 1\), or a cube \(n, 12, 10\) or \(n, 12, 10, 1\)",
    "blank": r"the image is blank: every pixel is NaN",
    "holes": r"the image holds 4 NaN or infinite pixels \(of 120\); replace them .*",
    "truncated": r"cannot be read as FITS \(.+\)",
    "empty": r"the file holds no image \(no HDU with data\)",
}


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_skip_bad_reports_every_bad_file_by_name_and_keeps_the_good_ones(bad_files):
    paths, good = bad_files
    batches, sources, stacked, bad = read_all(list(paths.values()), batch_size=2, skip_bad=True)
    assert sources == [paths["good0"], paths["good1"], paths["good3"]]
    np.testing.assert_array_equal(stacked, good[[0, 1, 3]])
    assert [item.source for item in bad] == [paths[key] for key in EXPECTED_REASONS]
    for item, (key, reason) in zip(bad, EXPECTED_REASONS.items()):
        assert re.fullmatch(reason, item.reason), (key, item.reason)
        assert str(item) == f"{item.source}: {item.reason}"


def test_by_default_reading_stops_at_the_first_bad_file_with_the_good_images_before_it(bad_files):
    paths, good = bad_files
    batches = list(io.ImageReader(list(paths.values()), SHAPE, batch_size=4))
    assert len(batches) == 1
    assert batches[0].sources == [paths["good0"]]
    np.testing.assert_array_equal(batches[0].images, good[:1])
    assert [item.source for item in batches[0].bad] == [paths["garbage"]]
    # A bad first file gives an empty batch that names it.
    first = list(io.ImageReader([paths["blank"], paths["good0"]], SHAPE))
    assert len(first) == 1 and first[0].images.shape == (0,) + SHAPE and first[0].bad[0].source == paths["blank"]


def test_bad_images_inside_a_npy_or_a_cube_are_named_by_index(tmp_path):
    data = images(6)
    data[2, 0, 0, 0] = np.nan
    data[4] = np.nan
    npy = str(tmp_path / "stack.npy")
    np.save(npy, data)
    cube = write_fits(tmp_path / "cube.fits", data[..., 0])
    for path in (npy, cube):
        _, sources, stacked, bad = read_all([path], batch_size=4, skip_bad=True)
        assert sources == [f"{path}[{i}]" for i in (0, 1, 3, 5)]
        np.testing.assert_array_equal(stacked, data[[0, 1, 3, 5]])
        assert [(item.source, item.reason.split(":")[0]) for item in bad] == [
            (f"{path}[2]", "the image holds 1 NaN or infinite pixels (of 120); replace them (for example with the "
                           "sky level) before classifying"),
            (f"{path}[4]", "the image is blank"),
        ]


@pytest.mark.parametrize(
    "content, reason",
    [
        (lambda path: np.save(path, np.zeros((3, 10, 12))),
         r"holds an array of shape \(3, 10, 12\), but the network takes a stack of images of shape "
         r"\(n, 12, 10\) or \(n, 12, 10, 1\)"),
        (lambda path: np.save(path, np.zeros((12, 10))), r"holds an array of shape \(12, 10\), but .*"),
        (lambda path: np.save(path, np.zeros((2, 12, 10), dtype=complex)),
         r"holds complex128 values, not real pixel values"),
        (lambda path: np.save(path, np.array([[None] * 3]), allow_pickle=True),
         r"holds object values, not real pixel values"),
        (lambda path: open(path, "wb").write(b"garbage" * 100), r"cannot be read as a .npy array \(.+\)"),
    ],
)
def test_bad_npy_files(tmp_path, content, reason):
    path = str(tmp_path / "bad.npy")
    content(path)
    _, sources, _, bad = read_all([path], skip_bad=True)
    assert sources == [] and len(bad) == 1 and bad[0].source == path
    assert re.fullmatch(reason, bad[0].reason), bad[0].reason


def test_a_truncated_npy_keeps_the_images_before_the_cut(tmp_path):
    path = tmp_path / "cut.npy"
    data = images(6)
    np.save(path, data)
    image_bytes = data[0].nbytes
    path.write_bytes(path.read_bytes()[: -int(2.5 * image_bytes)])
    _, sources, stacked, bad = read_all([str(path)], batch_size=2, skip_bad=True)
    assert sources == [f"{path}[0]", f"{path}[1]", f"{path}[2]"]  # 3.5 images remain
    np.testing.assert_array_equal(stacked, data[:3])
    assert bad[0].source == f"{path}[3]"
    assert bad[0].reason == "cannot be read: the file is truncated (it should hold 6 images, but ends within image 3)"


# --------------------------------------------------------------------------- input errors


def test_input_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no such file or folder: '.*missing.fits'"):
        io.expand_inputs([str(tmp_path / "missing.fits")])
    with pytest.raises(FileNotFoundError, match=r"the pattern '.*\*.fits' matches no files"):
        io.expand_inputs([str(tmp_path / "*.fits")])
    with pytest.raises(ValueError, match=r"the folder '.*empty' holds no FITS files \(names ending in .fits"):
        io.expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="no inputs were given"):
        io.expand_inputs([])
    with pytest.raises(TypeError, match="each input must be a path or a glob pattern. Received an object of type int"):
        io.expand_inputs([3])
    with pytest.raises(ValueError, match="batch_size must be a positive integer. Received: batch_size=0"):
        io.ImageReader([str(tmp_path)], SHAPE, batch_size=0)
    with pytest.raises(ValueError, match="input_shape must be 'SDSS', 'CANDELS' or a tuple"):
        io.ImageReader([str(tmp_path)], "HST")


def test_io_is_backend_neutral():
    code = "import sys, gamornet.io.images; sys.exit(bool({'tensorflow', 'keras', 'tflearn'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --------------------------------------------------------------------------- prefetch


def test_prefetch_keeps_order_and_overlaps_work():
    def slow(n):
        for index in range(n):
            time.sleep(0.02)
            yield index

    start = time.perf_counter()
    seen = []
    for item in prefetch(slow(10), depth=2):
        time.sleep(0.02)  # the consumer's work overlaps the producer's
        seen.append(item)
    assert seen == list(range(10))
    assert time.perf_counter() - start < 0.38  # 0.4 s if run one after the other


def test_prefetch_raises_the_producers_error_at_its_place():
    def failing():
        yield 1
        raise OSError("disk gone")

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(failing()):
            seen.append(item)
    assert seen == [1]


def test_prefetch_stops_the_producer_when_the_consumer_leaves():
    closed = threading.Event()

    def endless():
        try:
            index = 0
            while True:
                yield index
                index += 1
        finally:
            closed.set()

    before = threading.active_count()
    for item in prefetch(endless(), depth=1):
        if item == 3:
            break
    assert closed.wait(2)
    assert threading.active_count() == before
