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


class ColorGridEmbedder:
    """Test embedder: the image resized to 4x4, RGB in [-0.5, 0.5] flattened (48-d). Stands in for a CNN so that
    service/API tests know exactly which images are neighbours."""

    dim = 48

    def embed_pil(self, images):
        import numpy as np
        from PIL import Image

        return (
            np.stack(
                [
                    np.asarray(im.convert("RGB").resize((4, 4), Image.Resampling.BOX), dtype=np.float32).reshape(-1)
                    / 255.0
                    - 0.5
                    for im in images
                ]
            ).astype(np.float32)
            if images
            else np.zeros((0, 48), np.float32)
        )


def synthetic_images(n: int, seed: int = 0, size: int = 64):
    """``n`` random 4x4-block colour images (PIL), upsampled to ``size`` pixels, with labels."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        images.append(Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST))
        labels.append(["field", "forest", "river"][i % 3])
    return images, labels


@pytest.fixture(scope="module")
def image_service(tmp_path_factory):
    """A SearchService over 60 synthetic PNG images on disk (uri = file path), ColorGridEmbedder."""
    import pyarrow as pa

    from pipeline.io.sources import load_image_bytes
    from pipeline.search.index import SearchIndex
    from pipeline.search.service import SearchService

    folder = tmp_path_factory.mktemp("images")
    images, labels = synthetic_images(60)
    uris = []
    for i, im in enumerate(images):
        path = folder / f"{labels[i]}" / f"im{i:03d}.png"
        path.parent.mkdir(exist_ok=True)
        im.save(path)
        uris.append(str(path))
    ids = [f"{labels[i]}/im{i:03d}.png" for i in range(len(images))]
    embedder = ColorGridEmbedder()
    meta = pa.table({"id": ids, "uri": uris, "label": labels, "date": [f"2021-{1 + i % 12:02d}-01" for i in range(60)]})
    index = SearchIndex.build(embedder.embed_pil(images), cfg={"kind": "flat", "partition_by": ["label"]}, meta=meta)
    service = SearchService(index, embedder_factory=ColorGridEmbedder, image_loader=load_image_bytes)
    service.test_images = images  # type: ignore[attr-defined]
    return service


@pytest.fixture(scope="module")
def server_url(image_service):
    """A real uvicorn server for ``image_service`` on 127.0.0.1 and a free port."""
    import threading
    import time

    import uvicorn

    from pipeline.search.app import create_app

    config = uvicorn.Config(create_app(image_service), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.05)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    yield f"http://{host}:{port}"
    server.should_exit = True
    thread.join(10)
