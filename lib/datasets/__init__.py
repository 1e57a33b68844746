"""Dataset builders behind `lib.data` (the public face): image sets and benchmarks (`imagesets`), the family interface
(`family.Family`) and one module per family, each with its `FAMILY`: glyphs, emoji, fashion (Fashion-MNIST), real."""
