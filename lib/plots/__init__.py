"""Plot functions, one module per notebook area: data in, matplotlib Figure out."""
