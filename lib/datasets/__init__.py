"""Dataset builders behind `lib.data` (the public face): image sets, glyphs, emoji, Fashion-MNIST, real datasets."""
