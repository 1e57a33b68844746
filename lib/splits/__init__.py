"""Split lists of the real benchmarks (this folder holds them: lib/splits/README.md) and `lib.splits.resend`, the
converter of the ReSeND repository's original lists."""
