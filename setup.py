"""tipline: a streaming Beam pipeline for child-protection tip lines."""
from setuptools import find_packages, setup

RUNTIME = [
    "apache-beam[dask]==2.77.0",  # the dask extra: `tipline run --runner dask` (pipelines/dask_engine.py)
    "dask==2026.8.0",
    "distributed==2026.8.0",
    "google-cloud-pubsub==2.44.0",
    "fastavro==1.13.1",
    "pyarrow==25.0.1",
    "geoip2==5.3.0",
    "maxminddb==3.2.0",
    "imagehash==4.3.2",
    "Pillow==12.3.0",
    "numpy==2.4.6",
    "orjson==3.13.0",
    "isal==1.9.1",  # ISA-L deflate for the Avro sink (transforms/plumbing/avro_files.py): ~3x zlib level 1
    "numba==0.68.1",
    "pdqhash==0.2.8",
    "publicsuffixlist==1.1.2.20261023",
    # services/: the intake and agency services (tipline serve intake|agencies)
    "fastapi==0.163.2",
    "uvicorn[standard]==0.54.0",
    "python-multipart==0.0.34",
    "defusedxml==0.7.1",
    "httpx==0.28.1",
    "av==18.1.0",  # PyAV: video decoding for vPDQ; its wheels ship FFmpeg
]

setup(
    name="tipline",
    version="0.1.0",
    description="Streaming pipeline for child-protection tip lines on Apache Beam",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipelines", "pipelines.*", "transforms", "transforms.*", "schemas", "services", "services.*"]),
    package_data={
        "schemas": ["*.avsc", "*.csv", "*.example.json"],
        "transforms.demo": ["data/*"],
        "services.intake": ["*.xsd"],
    },
    install_requires=RUNTIME,
    extras_require={
        # the gcp extra lets the tests build a Dataflow job graph (tests/test_dataflow_graph.py)
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.15", "mmdb-writer==0.2.7",
                 "netaddr==1.3.0", "apache-beam[gcp]==2.77.0",
                 "xmlschema==4.3.2"],  # tests/test_intake_xsd.py validates documents against GET /xsd
        "gcp": ["apache-beam[gcp]==2.77.0"],
        "analyst": ["duckdb==2.0.0", "matplotlib==3.11.2"],
    },
    entry_points={"console_scripts": ["tipline=pipelines.cli:main"]},
)
