"""Media hashing on real encoded images: draft decoding, refusals with safe reasons, exact digests."""
import base64
import hashlib
import io

import pytest
from PIL import Image

from transforms.matching import media
from transforms.matching.media import UnhashableMedia, decode_image, hash_media, media_bytes
from transforms.matching.signals import Md5Signal, PdqSignal, PHashSignal, Sha1Signal
from transforms.demo.synthetic_images import encode_jpeg, encode_png, make_image

ALL = (Md5Signal, Sha1Signal, PHashSignal, PdqSignal)


def test_one_decode_gives_every_hash_and_draft_keeps_phash():
    data = encode_jpeg(make_image(3, size=512), 85)
    hashes = dict(hash_media(data, ALL))
    assert hashes[Md5Signal] == hashlib.md5(data).hexdigest() and hashes[Sha1Signal] == hashlib.sha1(data).hexdigest()
    drafted = dict(hash_media(data, [PHashSignal]))[PHashSignal]
    assert decode_image(data, draft=True).size < decode_image(data).size
    assert PHashSignal.compare(drafted, hashes[PHashSignal])[1] <= 2


def test_non_image_bytes_keep_their_digests():
    with pytest.raises(UnhashableMedia, match="not a recognised image format") as caught:
        hash_media(b"%PDF-1.4 plain text", ALL)
    assert dict(caught.value.hashes)[Md5Signal] == hashlib.md5(b"%PDF-1.4 plain text").hexdigest()


def test_truncated_image_is_undecodable():
    data = encode_png(make_image(1))[:400]
    with pytest.raises(UnhashableMedia, match="could not be decoded"):
        hash_media(data, [PHashSignal])


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(media, "MAX_PIXELS", 100 * 100)
    big = io.BytesIO()
    Image.new("L", (400, 400)).save(big, format="PNG")
    with pytest.raises(UnhashableMedia, match=r"image too large \(400x400 pixels\)"):
        hash_media(big.getvalue(), [PHashSignal])


def test_media_sources_and_limits(tmp_path):
    data = encode_jpeg(make_image(2), 80)
    roots = [str(tmp_path)]
    assert media_bytes({"content": base64.b64encode(data).decode()}, roots) == data
    path = tmp_path / "secret-f1.jpg"
    path.write_bytes(data)
    assert media_bytes({"contentUri": str(path)}, roots) == data
    assert media_bytes({"content": None, "contentUri": None}, roots) is None
    with pytest.raises(UnhashableMedia, match="larger than 100 bytes"):
        media_bytes({"contentUri": str(path)}, roots, max_bytes=100)
    with pytest.raises(UnhashableMedia, match="not valid base64"):
        media_bytes({"content": "!!not base64!!"}, roots)
    with pytest.raises(UnhashableMedia) as missing:
        media_bytes({"contentUri": str(tmp_path / "secret-gone.jpg")}, roots)
    assert "secret" not in str(missing.value)


def test_large_jpeg_pdq_is_drafted_and_stays_near_the_full_decode():
    """PDQ decodes JPEGs at >= 512 px: a 1100 px image decodes at 550 px and moves a few bits at most."""
    data = encode_jpeg(make_image(6, size=1100), 90)
    assert decode_image(data, draft=PdqSignal.draft_size).size == (550, 550)
    drafted = dict(hash_media(data, [PdqSignal, PHashSignal]))
    assert PdqSignal.distance(drafted[PdqSignal], PdqSignal.hash_image(decode_image(data))) <= 8
    assert drafted[PHashSignal] == dict(hash_media(data, [PHashSignal]))[PHashSignal]  # same with or without PDQ
