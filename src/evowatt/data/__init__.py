"""Datasets and their seeded splits: the embedded ones, .npz files and folders of images."""
