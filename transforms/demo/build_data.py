"""Builds the embedded demo data in transforms/demo/data (deterministic: a rerun writes the same bytes).

    python -m transforms.demo.build_data

- demo-city.mmdb: a SYNTHETIC GeoIP2-City database over the networks the synthetic stream draws IPs
  from (`transforms.demo.synthetic.network_plan`);
- demo-bank.csv: PHASH of the known synthetic pictures, the known MD5 digests and VPDQ of the known videos;
- demo-negative-bank.csv: PHASH of the benign pictures the stream also sends.
Needs the `test` extra (mmdb-writer).
"""
import bisect
import csv
import ipaddress
import json
import pathlib

import imagehash
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from transforms.demo.synthetic import (BENIGN_IMAGE_SEEDS, KNOWN_IMAGE_SEEDS, KNOWN_VIDEO_SEEDS, demo_video_spec,
                                  geoip_record, known_md5s, network_plan)
from transforms.demo.synthetic_images import make_image
from transforms.demo.synthetic_videos import encode_video
from transforms.matching.signals import VPdqSignal
from transforms.matching.video import hash_video

REPO = pathlib.Path(__file__).resolve().parents[2]
OUT = pathlib.Path(__file__).resolve().parent / "data"
BANK_COLUMNS = ("hash_type", "hash_value", "bank", "label", "external_id")
BUILD_EPOCH = 1795392000  # 2026-11-23T00:00:00Z, fixed so the file is reproducible
SERIES_SIZE = 10
IPV4_IN_IPV6 = ipaddress.ip_network("::/96")
DESCRIPTION = ("SYNTHETIC demo database for tipline: fictional locations for the synthetic report stream. "
               "Not real geolocation data; do not use for anything else.")


class ReproducibleWriter(MMDBWriter):
    """MMDBWriter stamps the wall-clock time in the metadata; the demo file carries a fixed one."""

    def _build_meta(self):
        return {**super()._build_meta(), "build_epoch": BUILD_EPOCH}


def build_city_db(path):
    writer = ReproducibleWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                                languages=["en"], description={"en": DESCRIPTION})
    for place in network_plan():
        record = geoip_record(place)
        for network in (place.ipv4, place.ipv6):
            if not network.network_address.is_global:
                raise ValueError(f"{network} is not globally routable")
            writer.insert_network(IPSet([str(network)]), record)
    writer.to_db_file(str(path))


def phash_of(seed):
    return str(imagehash.phash(make_image(seed)))


def known_bank_rows():
    rows = [("PHASH", phash_of(seed), "demo-known", f"demo-known-series-{number // SERIES_SIZE + 1}",
             f"demo-image-{seed}") for number, seed in enumerate(KNOWN_IMAGE_SEEDS)]
    rows += [("MD5", md5, "demo-known", f"demo-known-files-{number // SERIES_SIZE + 1}", f"demo-file-{number}")
             for number, md5 in enumerate(known_md5s())]
    rows += [("VPDQ", vpdq_of(seed), "demo-known", "demo-known-videos", f"demo-video-{seed}")
             for seed in KNOWN_VIDEO_SEEDS]
    return rows


def vpdq_of(seed):
    return VPdqSignal.to_text(hash_video(encode_video(demo_video_spec(seed))).features)


def benign_bank_rows():
    return [("PHASH", phash_of(seed), "demo-benign", f"demo-benign-meme-{number + 1}", f"demo-image-{seed}")
            for number, seed in enumerate(BENIGN_IMAGE_SEEDS)]


def write_bank(path, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(BANK_COLUMNS)
        writer.writerows(rows)


def check_no_overlap_with_maxmind_tests(shared_maxmind):
    """The tests use MaxMind's test databases; the demo networks must not shadow theirs."""
    ours = sorted((network.version, int(network.network_address), int(network.broadcast_address))
                  for place in network_plan() for network in (place.ipv4, place.ipv6))
    for source in sorted(shared_maxmind.glob("*.json")):
        for entry in json.loads(source.read_text()):
            for key in entry:
                theirs = as_ipv4_when_mapped(ipaddress.ip_network(key, strict=False))
                first, last = int(theirs.network_address), int(theirs.broadcast_address)
                # the only candidate is the last of ours starting at or before `last`
                candidate = bisect.bisect_right(ours, (theirs.version, last, float("inf"))) - 1
                if candidate >= 0:
                    version, start, end = ours[candidate]
                    if version == theirs.version and end >= first:
                        raise ValueError(f"{theirs} of {source.name} overlaps the demo networks")


def as_ipv4_when_mapped(network):
    """MaxMind's JSON writes IPv4 networks inside ::/96 (`::81.2.69.142/127`)."""
    if network.version == 6 and network.prefixlen >= 96 and network.subnet_of(IPV4_IN_IPV6):
        return ipaddress.ip_network((int(network.network_address), network.prefixlen - 96))
    return network


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    shared_maxmind = REPO.parent / "shared" / "data" / "maxmind"
    if shared_maxmind.is_dir():
        check_no_overlap_with_maxmind_tests(shared_maxmind)
    build_city_db(OUT / "demo-city.mmdb")
    write_bank(OUT / "demo-bank.csv", known_bank_rows())
    write_bank(OUT / "demo-negative-bank.csv", benign_bank_rows())
    print(f"wrote {len(network_plan())} places, {len(KNOWN_IMAGE_SEEDS)} + {len(known_md5s())} + "
          f"{len(KNOWN_VIDEO_SEEDS)} videos known and "
          f"{len(BENIGN_IMAGE_SEEDS)} benign hashes to {OUT}")


if __name__ == "__main__":
    main()
