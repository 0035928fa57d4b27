"""cosmotrain: containerized HPC training for cosmology deep learning.

TensorFlow is an extra, so that a GPU node does not get the CPU build: ``pip install
'.[gpu]'`` (``tensorflow[and-cuda]``) or ``pip install '.[cpu]'`` (``tensorflow-cpu``), at the
version the lock files pin. Horovod is compiled against the TensorFlow already installed:
install TensorFlow first, then Horovod with ``--no-build-isolation`` (scripts/setup_env.sh
and the Dockerfiles do exactly that from ``requirements/*.lock``).
"""
from setuptools import find_packages, setup

TENSORFLOW = "2.15.1"  # = requirements/cpu.lock and gpu.lock; Horovod 0.28.1 builds against it

setup(
    name="cosmotrain",
    version="0.1.0",
    description="Data-parallel CNN and DCGAN training for galaxies and CMB maps (Horovod, MPI, HDF5)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"cosmotrain": ["data/*.txt", "configs/*.yaml", "ompi_rules.conf"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "numpy<2", "h5py", "healpy", "mpi4py", "PyYAML", "tqdm", "matplotlib", "scipy", "pillow", "horovod==0.28.1",
        "ducc0",
    ],
    extras_require={"cpu": [f"tensorflow-cpu=={TENSORFLOW}"], "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW}"],
                    "camb": ["camb"], "dev": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["cosmotrain=cosmotrain.cli:main"]},
)
