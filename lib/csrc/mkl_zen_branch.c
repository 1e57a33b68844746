/* Put oneMKL on the branch it takes on an AMD Zen CPU, on every x86-64 CPU (lib/__init__.py loads this first).
 *
 * torch's x86 wheels link oneMKL statically but export its service functions, so the first definition of these in
 * the process's global scope is the one MKL's dispatcher calls. On Intel CPUs MKL otherwise picks its GEMM kernels
 * by MKL_CBWR and its vector-math (exp, log, sqrt, erf, tanh) kernels by the CPU; on AMD CPUs it ignores every
 * MKL_CBWR branch but AUTO and COMPATIBLE and runs its Zen GEMM kernels and its compatible vector math. Those round
 * differently from Intel's AVX2 branch (docs/cross_machine.md), so a run on one vendor did not reproduce a run on
 * the other. With these three answers MKL takes the Zen branch everywhere: on a Zen CPU they are what MKL finds
 * anyway. Built by `make cpu-paths` into .venv/lib/ (lib.MKL_BRANCH_LIBRARY). */
int mkl_serv_intel_cpu_true(void) { return 0; }
int mkl_serv_intel_cpu(void) { return 0; }
int mkl_serv_cpuiszen(void) { return 1; }
