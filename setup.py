"""Packaging for lth_jax (strong lottery tickets via SubsetSum, in JAX)."""

from setuptools import find_packages, setup

setup(
    name="lth_jax",
    version="0.1.0",
    description=(
        "Strong lottery tickets by exact SubsetSum: prune a random ReLU network "
        "to approximate any target network (Pensia et al., NeurIPS 2020), in JAX."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["lth_jax", "lth_jax.*", "experiments", "experiments.*"]),
    package_data={"experiments": ["*.ipynb"]},
    python_requires=">=3.11",
    # Loose lower bounds: Colab ships an accelerator build of jax that must not be replaced.
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "chex>=0.1.87",
        "absl-py>=1.0",
        "ml-collections>=0.1.1",
        "numpy>=1.26",
        # Trained Experiment 1 targets are checkpointed with orbax and reused (issue 4):
        # every run that trains needs it.
        "orbax-checkpoint>=0.6",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-xdist>=3",
            "hypothesis>=6.100",
            "scipy>=1.11",
            "nbclient>=0.9",
            "nbformat>=5.9",
            "ipykernel>=6.25",
            "matplotlib>=3.8",
        ],
        "plots": ["matplotlib>=3.8"],
        "benchmarks": ["gurobipy>=11", "highspy>=1.7"],
        "cuda": ["jax[cuda12]"],
        "tpu": ["jax[tpu]"],
    },
)
