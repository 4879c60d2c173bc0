"""Search tests: one FAISS thread (OpenMP spin-waiting on a shared 2-core machine is pathological)."""
from __future__ import annotations

import faiss
import pytest


@pytest.fixture(autouse=True, scope="session")
def _single_faiss_thread():
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)
