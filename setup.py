"""cosmotrain: containerized HPC training for cosmology deep learning."""
from setuptools import find_packages, setup

setup(
    name="cosmotrain",
    version="0.1.0",
    description="Data-parallel CNN and DCGAN training for galaxies and CMB maps (Horovod, MPI, HDF5)",
    package_dir={"": "src"},
    packages=find_packages("src"),
    package_data={"cosmotrain": ["data/*.txt", "configs/*.yaml"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        "tensorflow-cpu==2.15.1", "numpy<2", "h5py", "healpy", "mpi4py", "PyYAML",
        "tqdm", "matplotlib", "scipy", "pillow", "horovod==0.28.1", "ducc0",
    ],
    extras_require={"camb": ["camb"], "dev": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["cosmotrain=cosmotrain.cli:main"]},
)
