"""The data the papers start from: EmpatheticDialogues, EPITOME, the dialogue chat format, and fetching the public releases."""
