"""Software side of xnorflow: the encoding contract, golden model, CPU kernels, training and
the compiler. Never imports amaranth; torch is imported only by the modules that train."""
