"""Prompt files (*.json), shipped as the package data `explainer.prompt_files`."""
