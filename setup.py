"""recbole-earn: LLM-based generative recommenders with EARN inference acceleration, as RecBole models.

torch comes first and by itself (`pip install torch==2.13.0`): a bare `torch` requirement can pull a
multi-GB CUDA build. The pins below are the ones measured to work with RecBole 1.2.1 (see README).
"""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


setup(
    name="recbole-earn",
    version="0.1.0",
    description="EARN register-token inference acceleration for LLM-based generative recommenders in RecBole",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    if os.path.exists(os.path.join(HERE, "README.md"))
    else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["recbole_earn", "recbole_earn.*"]) + ["recbole_earn.properties"],
    # properties/ lives at the top level of the repository; it is shipped inside the package as
    # recbole_earn/properties so that an installed wheel finds its defaults (see recbole_earn/paths.py).
    package_dir={"recbole_earn.properties": "properties"},
    package_data={"recbole_earn.properties": ["*.yaml", "*/*.yaml"],
                  "recbole_earn.analysis": ["*.txt"]},  # the English text the attention analysis compares with
    install_requires=[
        "torch>=2.1",
        "recbole==1.2.1",
        "transformers>=5.0,<6",
        "peft>=0.17",
        "accelerate>=1.0",
        "gguf>=0.10",
        "numpy<2",
        "pandas<3",
        "scipy<1.12",
        "setuptools>=77.0.3,<81",
        "hyperopt",
        "pyarrow<21",  # Ray Tune (tool: ray in hyper-parameter searches) reads its results back with it; 21+ needs NumPy 2
        "pyyaml",
    ],
    # matplotlib draws the learning-curve figures (python -m recbole_earn.report.learning_curves); 3.9 is the last
    # release line that supports numpy < 2, which RecBole 1.2.1 needs.
    extras_require={"test": ["pytest", "hypothesis", "matplotlib>=3.7,<3.10"], "plots": ["matplotlib>=3.7,<3.10"]},
    entry_points={"console_scripts": ["run-earn=recbole_earn.cli:main"]},
)
