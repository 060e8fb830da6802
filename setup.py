"""t2jax: Train-to-Test scaling laws in JAX/Flax."""
import setuptools

# Versions are pinned to what the package index serves; BUILD_NOTES.md says why.
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "grain==0.2.18",
    "numpyro==0.22.0",
    # The Bayesian workflow (t2jax/laws/diagnostics.py): r-hat/ESS, PSIS-LOO, netCDF posteriors.
    # arviz-plots 0.8.0 is left out: it fails to import with matplotlib 3.11 (it appends to
    # matplotlib.style.core, which 3.11 removed), so the trace/rank plots are drawn directly.
    "arviz-base==0.8.2",
    "arviz-stats==0.8.0",
    "xarray==2026.9.0",
    "xarray-einstats==0.9.1",  # arviz-stats' xarray layer (its `xarray` extra)
    "h5netcdf==1.8.2",  # DataTree.to_netcdf needs netCDF-4 groups: h5netcdf or netCDF4, not scipy
    "h5py==3.16.0",  # h5netcdf's backend; its wheels bundle HDF5 (no system libraries)
    "ml-collections==1.1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "scipy>=1.13",
    "tokenizers>=0.20",
    "matplotlib>=3.8",
    "tensorboardX>=2.6",
]

EXTRAS = {
    "dev": ["pytest>=8", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6"],
    "notebooks": ["jupyter", "nbclient>=0.10", "ipykernel>=6"],
    "seqio": ["seqio==0.0.20", "tensorflow==2.21.0", "tensorflow-text==2.21.1"],  # see BUILD_NOTES
    "gpu": ["jax[cuda12]==0.10.2"],
    "tpu": ["jax[tpu]==0.10.2"],
}

setuptools.setup(
    name="t2jax",
    version="0.1.0",
    description="Train-to-Test scaling laws: train, sample, fit and plan (N, D, k) in JAX",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["t2jax", "t2jax.*"]),
    package_data={"t2jax": ["assets/*"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
)
