"""PDQ of an RGB array, computing the grey in one compiled pass and calling pdqhash's C++ on it directly.

Its own module, imported by the first image hashed: numba costs a process ~0.15 s to import, which a run
over reports without media, and every command line tool, need not pay.
"""
import ctypes

import numba
import numpy as np
import pdqhash


def pdq_hash(pixels):
    """(hex, quality) of an RGB uint8 array as pdqhash.compute gives them; hex has the hash's first bit most
    significant."""
    if FROM_LUMA is None:
        bits, quality = pdqhash.compute(pixels)
        return np.packbits(bits.astype(np.uint8)).tobytes().hex(), int(quality)
    return _hash_through_luma(pixels)


@numba.njit(cache=True, nogil=True)
def _luma(pixels):
    """pdqhash.compute's own grey, bit for bit (float64 sum in its order, then float32), in one pass:
    its numpy expression took ~40% of the hash's time on an 800 px image."""
    rows, cols = pixels.shape[0], pixels.shape[1]
    luma = np.empty((rows, cols), dtype=np.float32)
    for row in range(rows):
        for col in range(cols):
            luma[row, col] = np.float32(np.float64(pixels[row, col, 0]) * 0.299
                                        + np.float64(pixels[row, col, 1]) * 0.587
                                        + np.float64(pixels[row, col, 2]) * 0.114)
    return luma


def _entry_point():
    """pdqhash's C++ pdqHash256FromFloatLuma, exported by its extension module; None if it is not there."""
    try:
        function = getattr(ctypes.CDLL(pdqhash.bindings.__file__),
                           "_ZN8facebook3pdq7hashing23pdqHash256FromFloatLumaEPfS2_iiPA64_fS4_PA16_fRNS1_7Hash256ERi")
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 5
    function.restype = None
    return function


FROM_LUMA = _entry_point()


def _hash_through_luma(pixels):
    """`pdq_hash` through pdqhash's exported C++ entry point, on the grey computed here."""
    luma = _luma(np.ascontiguousarray(pixels, dtype=np.uint8))
    scratch = np.zeros_like(luma)
    buffers = np.zeros(64 * 64 + 16 * 64 + 16 * 16, dtype=np.float32)
    words = np.zeros(16, dtype=np.uint16)
    quality = ctypes.c_int(0)
    pointer = buffers.ctypes.data
    FROM_LUMA(luma.ctypes.data, scratch.ctypes.data, luma.shape[0], luma.shape[1], pointer,
              pointer + 64 * 64 * 4, pointer + (64 * 64 + 16 * 64) * 4, words.ctypes.data, ctypes.byref(quality))
    return words[::-1].astype(">u2").tobytes().hex(), quality.value
