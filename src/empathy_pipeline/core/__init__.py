"""The spine every stage stands on: errors, atomic I/O, typed params, the stage runner, provenance, profiles, the dvc.lock check."""
