"""Task files (*.json), shipped as the package data `sparse_model.task_files`."""
