"""Signal types: registry spellings, validation, known digests, and perceptual robustness on real images."""
import io
import random

import pytest
from hypothesis import given, strategies as st
from PIL import Image

from transforms.matching.signals import (DHashSignal, Md5Signal, PdqSignal, PHashSignal, Sha1Signal, Sha256Signal,
                                signal_for)
from transforms.demo.synthetic_images import VARIANT_KINDS, encode_jpeg, make_image, variant

# PDQ hashes of Meta's bridge test images, as published with python-threatexchange's PdqSignal examples
PUBLISHED_PDQ = ("f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
                 "d8f8f0cec0f4a84f8e370a22038f67f0b36a2ed597231e1d72e6b39c4a9c9b22")


@pytest.mark.parametrize("spelling,signal", [
    ("MD5", Md5Signal), ("md5", Md5Signal), ("SHA1", Sha1Signal), ("SHA-1", Sha1Signal), ("sha_1", Sha1Signal),
    ("SHA256", Sha256Signal), ("SHA-256", Sha256Signal), ("PHASH", PHashSignal), ("pHash", PHashSignal),
    ("DHASH", DHashSignal), ("PDQ", PdqSignal), ("pdq", PdqSignal)])
def test_registry_spellings(spelling, signal):
    assert signal_for(spelling) is signal


def test_unknown_type_and_invalid_values():
    with pytest.raises(KeyError, match="FOO"):
        signal_for("FOO")
    for signal, bad in ((Md5Signal, "abc"), (PHashSignal, "z" * 16), (PdqSignal, "0" * 63)):
        with pytest.raises(ValueError):
            signal.validate(bad)
    assert PHashSignal.validate(" ABCDEF0123456789 ") == "abcdef0123456789"


def test_exact_digests_known_vectors():
    assert Md5Signal.hash_bytes(b"The quick brown fox jumps over the lazy dog") == "9e107d9d372bb6826bd81d3542a419d6"
    assert Sha1Signal.hash_bytes(b"abc") == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert Sha256Signal.hash_bytes(b"abc").startswith("ba7816bf8f01cfea")
    assert Md5Signal.compare("a" * 32, "a" * 32) == (True, 0) and Md5Signal.compare("a" * 32, "b" * 32) == (False, 1)


def test_published_pdq_examples_validate_and_compare_within_threshold():
    first, second = (PdqSignal.validate(value) for value in PUBLISHED_PDQ)
    match, distance = PdqSignal.compare(first, second)
    assert match and 0 < distance <= 31


def test_hash_formats():
    image = make_image(4)
    assert PHashSignal.hash_image(image) == PHashSignal.validate(PHashSignal.hash_image(image))
    assert len(DHashSignal.hash_image(image)) == 16 and len(PdqSignal.hash_image(image)) == 64


def test_pdq_refuses_flat_images():
    assert PdqSignal.hash_image(Image.new("RGB", (128, 128), (120, 120, 120))) is None


@pytest.mark.parametrize("signal,kinds", [(PHashSignal, VARIANT_KINDS), (DHashSignal, VARIANT_KINDS),
                                          (PdqSignal, ("jpeg", "png"))])
def test_variants_stay_within_threshold_and_unrelated_images_beyond(signal, kinds):
    """pHash/dHash survive re-encoding, resizing and slight crops; PDQ is checked on re-encodes only,
    since crops of these small generated pictures measured up to 48 bits away."""
    for seed in range(8):
        original = make_image(seed)
        reference = signal.hash_image(original)
        rng = random.Random(seed)
        for kind in kinds:
            copy = signal.hash_image(Image.open(io.BytesIO(variant(original, kind, rng))))
            assert signal.compare(reference, copy)[0], (seed, kind)
        unrelated = signal.hash_image(Image.open(io.BytesIO(encode_jpeg(make_image(seed + 500), 90))))
        assert not signal.compare(reference, unrelated)[0], seed


def test_phash_is_bit_identical_to_imagehash():
    """The numpy DCT must give imagehash's exact hash: banks hold hashes computed with imagehash."""
    import imagehash
    images = [make_image(seed, size=size) for seed, size in zip(range(12), (64, 200, 512) * 4)]
    images += [Image.open(io.BytesIO(encode_jpeg(image, 80))) for image in images[:4]]
    images += [image.convert("L") for image in images[:4]] + [Image.new("L", (50, 50), v) for v in (0, 128)]
    for image in images:
        assert PHashSignal.hash_image(image) == str(imagehash.phash(image))


def test_pdq_through_the_luma_entry_point_equals_pdqhash_compute():
    """PdqSignal computes the grey itself and calls pdqhash's C++ directly: same bits, same quality."""
    import numpy as np
    import pdqhash

    from transforms.matching.pdq_pixels import FROM_LUMA, _hash_through_luma
    if FROM_LUMA is None:
        pytest.skip("pdqhash build without the exported luma entry point: PdqSignal uses pdqhash.compute")
    rng = np.random.default_rng(5)
    arrays = [np.asarray(make_image(seed, size=size).convert("RGB")) for seed, size in enumerate((64, 300, 512))]
    arrays += [rng.integers(0, 256, (shape[0], shape[1], 3), dtype=np.uint8) for shape in ((7, 300), (257, 129))]
    for pixels in arrays:
        bits, quality = pdqhash.compute(pixels)
        assert _hash_through_luma(pixels) == (np.packbits(bits.astype(np.uint8)).tobytes().hex(), quality)


@given(st.one_of(st.text(max_size=70), st.text(alphabet="0123456789abcdefABCDEF \u0661\uff10g-", max_size=70)))
def test_a_hash_is_valid_exactly_when_its_canonical_text_is_hex_digits_of_the_right_length(value):
    for signal in (Md5Signal, Sha1Signal, PdqSignal, PHashSignal):
        text = value.strip().lower()
        expected = text if len(text) == signal.hex_length and all(c in "0123456789abcdef" for c in text) else None
        try:
            found = signal.validate(value)
        except ValueError:
            found = None
        assert found == expected
