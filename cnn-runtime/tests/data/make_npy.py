"""Writes the .npy fixtures read by io::tests::npy_from_numpy_and_its_errors.

Run from this folder with `pip install numpy` (tested with numpy 2.4): python3 make_npy.py
All three hold arange(6).reshape(2, 3) * 0.5: as C-order float32, Fortran-order float32, and
float64 (which the reader must reject with a clear message).
"""
import numpy as np

a = (np.arange(6).reshape(2, 3) * 0.5).astype(np.float32)
np.save("c_f32.npy", a)
np.save("fortran_f32.npy", np.asfortranarray(a))
np.save("f64.npy", a.astype(np.float64))
