"""The pipeline's steps, from files to files: pretraining runs (:mod:`.runs`) and reports (:mod:`.reports`,
rendering the notebooks, which take their helpers from :mod:`.notebook`).

The workflow's scripts call these; each function takes plain paths and settings and writes its
artifacts atomically, with their provenance (``gptlab.io.write_table``).
"""
