"""Geo lookup throughput on one core: GeoLocator vs the raw maxminddb C reader and geoip2 `Reader.city()`.

    .venv/bin/python -m benchmarks.bench_geo [--city-db F] [--seconds S]     # from the repo root

Uses MaxMind's City test database by default (../shared/data/maxmind). IPs are drawn from its networks
(hits) mixed with misses, as a stream would mix them. Prints lookups/s and ratios; asserts nothing.
"""
import argparse
import os
import pathlib
import random
import time

import geoip2.database
import geoip2.errors
import maxminddb

from transforms.location.geoip import GeoLocator, classify_ip

DEFAULT_CITY_DB = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/maxmind/GeoIP2-City-Test.mmdb"


def hit_ips(reader, count, version, seed=2026):
    """Distinct addresses of one IP version inside the db's networks: every lookup finds a record."""
    rng = random.Random(seed)
    networks = [network for network, record in reader if record.get("country") and network.version == version]
    count = min(count, sum(min(network.num_addresses, 1 << 32) for network in networks))
    ips = set()
    while len(ips) < count:
        network = rng.choice(networks)
        address = network.network_address + rng.randrange(min(network.num_addresses, 1 << 32))
        ips.add(str(address.ipv4_mapped or address) if address.version == 6 else str(address))
    return sorted(ips, key=lambda _: rng.random())


def miss_ips(count, seed=2027):
    """Random public-looking IPv4 addresses, nearly all absent from a test db."""
    rng = random.Random(seed)
    return [f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
            for _ in range(count)]


def rate(label, function, items, seconds, unit="lookups/s"):
    """Calls per second of `function` over `items`, repeated for about `seconds`."""
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for item in items:
            function(item)
        done += len(items)
    per_second = done / (time.perf_counter() - started)
    print(f"{label:<62} {per_second:>10,.0f} {unit}")
    return per_second


def geoip2_city(reader):
    def lookup(ip):
        try:
            return reader.city(ip)
        except geoip2.errors.AddressNotFoundError:
            return None
    return lookup


def locate_rate(locator, ips, seconds):
    """Whole reports (the contract example with one Upload IP each) located per second."""
    reports = [{"reportId": f"r-{i}", "files": [{"fileId": "f-1", "ipCaptureEvent": {"ipAddress": ip, "eventName": "Upload"}}],
                "personOrUserReported": {"ipCaptureEvents": [{"ipAddress": "10.0.0.1", "eventName": "Login",
                                                              "dateTime": "2026-11-23T09:57:40Z"}]}}
               for i, ip in enumerate(ips[:2000])]
    return rate("GeoLocator.locate(report): Upload IP + private login IP", locator.locate, reports, seconds, "reports/s")


def workload(name, ips, args):
    """Every reader on the same IPs; returns (uncached, cached) GeoLocator rates."""
    print(f"-- {name}: {len(ips):,} distinct IPs, each looked up repeatedly")
    with geoip2.database.Reader(args.city_db, mode=maxminddb.MODE_MMAP_EXT) as model_reader:
        model = rate("geoip2 Reader.city() (C extension)", geoip2_city(model_reader), ips, args.seconds)
    raw = maxminddb.open_database(args.city_db, maxminddb.MODE_MMAP_EXT)
    raw_rate = rate("raw maxminddb Reader.get() (C extension)", raw.get, ips, args.seconds)
    locator = GeoLocator(args.city_db)

    def uncached_lookup(text):
        ip, problem = classify_ip.__wrapped__(text)
        return None if problem else locator._city_of(ip)

    uncached = rate("GeoLocator lookup, caches bypassed (classify + raw + fields)", uncached_lookup, ips, args.seconds)
    for ip in ips:  # warm the caches
        locator.lookup(ip)
    cached = rate("GeoLocator.lookup, warm LRU caches", locator.lookup, ips, args.seconds)
    print(f"ratios: uncached/raw = {uncached / raw_rate:.2f}, uncached/geoip2 = {uncached / model:.2f}, "
          f"cached/raw = {cached / raw_rate:.2f}, cached/geoip2 = {cached / model:.2f}")
    return locator, uncached, cached


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--city-db", default=str(DEFAULT_CITY_DB))
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    print(f"os.cpu_count() = {os.cpu_count()}; one process, one core; db = {args.city_db}")
    with maxminddb.open_database(args.city_db, maxminddb.MODE_MMAP_EXT) as reader:
        hits = hit_ips(reader, 20000, version=4)
        hits_v6 = hit_ips(reader, 20000, version=6)
    locator, uncached, cached = workload("IPv4 hits (every IP in the db)", hits, args)
    workload("IPv6 hits (every IP in the db)", hits_v6, args)
    workload("misses (random public IPv4)", miss_ips(20000), args)
    print("-- whole reports")
    locate_rate(locator, hits, args.seconds)
    print(f"target >= 100,000 lookups/s on IPv4 hits: caches bypassed {'met' if uncached >= 1e5 else 'NOT met'}, "
          f"warm caches {'met' if cached >= 1e5 else 'NOT met'}")


if __name__ == "__main__":
    main()
