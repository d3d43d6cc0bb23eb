from setuptools import find_packages, setup

setup(
    name="tfinpaint",
    version="0.1.0",
    description="TensorFlow 2 / Keras 3 model zoo for deep image inpainting "
    "(GLCIC, DeepFill v1/v2, Partial Convolutions, CRA/HiFill).",
    python_requires=">=3.11",
    packages=find_packages(include=["tfinpaint", "tfinpaint.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "numpy",
        "opencv-python-headless",
        "absl-py",
        # `tensorboard --logdir` views the training logs; TensorFlow 2.21 no longer installs it.
        "tensorboard>=2.21,<2.22",
        # Built-in sample photos for the README's main command (no downloads at run time).
        "scikit-image",
        "scikit-learn",
    ],
    extras_require={"dev": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["tfinpaint=tfinpaint.cli:main"]},
)
