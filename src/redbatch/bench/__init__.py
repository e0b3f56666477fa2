"""``redbatch bench``: a load generator that sizes a deployment (the command is
``redbatch.cli.bench``)."""
