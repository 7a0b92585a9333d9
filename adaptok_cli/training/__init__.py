"""Training the shipped weights: TinyTok (tokenizer.py) and LIT (lit.py), on one shared loop (loop.py)
over clips decoded once into a cache (data.py). Nothing here runs when adaptok compresses or decompresses.

    python -m adaptok_cli.training.tokenizer --help
    python -m adaptok_cli.training.lit --help
"""
