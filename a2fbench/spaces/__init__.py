"""Output spaces: what a motion vector means and how it becomes vertices (numpy; torch in :mod:`.torch_modules`).

A space is declared in ``manifests/spaces.yaml`` (:class:`~a2fbench.registry.Space`: name, kind, width,
channel names, basis or model file). Every dataset names one; UniTalker keys its heads by it and the metrics
score every space in vertices. Three kinds:

* ``vertices``: a frame is the flattened absolute positions, (3V,). Converting is a reshape.
* ``blendshape`` (ARKit-52 in EmoTalk's alphabetical order, ARKit-51 of the UniTalker release):
  ``vertices = weights @ blendshape + meanshape`` (UniTalker's ``bs2vertices``) with a basis npz holding
  ``meanshape`` (V, 3) or (3V,) and ``blendshape`` (K, 3V) or (K, V, 3) deltas. The way back, vertices to
  weights, is a bounded least-squares solve in [0, 1] (:meth:`BlendshapeConverter.to_weights`).
* ``flame``: the 413-wide UniTalker vector ``[0:300]`` shape, ``[300:400]`` expression, ``[400:403]`` jaw
  (axis-angle), ``[403:409]`` 6-D head rotation, ``[409:412]`` translation, ``[412]`` scale, turned into
  vertices by FLAME 2020 linear blend skinning with global rotation, neck and eyeballs at zero and
  rotation, translation and scale ignored, as UniTalker's ``FlameLayer`` does. The model is read from
  ``generic_model.pkl`` through :mod:`a2fbench.util.safepickle` (chumpy objects become arrays without chumpy)
  or from a converted ``flame.npz`` (``a2fbench convert-flame``).

Takes: a space (registry) and its converter arrays. Gives: converters to vertices (numpy and torch), the
bounded ARKit solve, and the PCA of vertex datasets (:mod:`.pca`). Modules: :mod:`.convert` (the API below),
:mod:`.blendshape`, :mod:`.arkit_solve`, :mod:`.flame`, :mod:`.torch_modules`, :mod:`.pca`.

Python API (stable inside the project)::

    conv = converter(space, arrays)        # None for vertex spaces
    conv.to_vertices(params)               # (T, P) -> (T, V, 3) float64
    conv.to_weights(vertices)              # blendshape spaces: (T, V, 3) -> (T, K) in [0, 1]
    torch_converter(space, arrays)         # torch.nn.Module, (..., P) -> (..., V, 3); vertex spaces: reshape

``arrays`` are the converter arrays of the space: ``Dataset.space_arrays()`` of a prepared store, or
:func:`read_space_files` of a raw folder. numpy and torch converters agree to float rounding (tested).
"""

from .blendshape import (
           BlendshapeConverter,
           basis_region,
           read_blendshape_basis,
           reorder_channels,
)
from .convert import (
           Converter,
           channels,
           converter,
           n_vertices,
           read_space_files,
           to_vertices,
           torch_converter,
)
from .flame import (
           FLAME_KEYS,
           FlameConverter,
           FlameModel,
           check_flame_arrays,
           convert_flame,
           flame_lbs,
           read_flame_model,
           rodrigues,
)

__all__ = ["BlendshapeConverter", "basis_region", "read_blendshape_basis", "reorder_channels", "Converter",
           "channels", "converter", "n_vertices", "read_space_files", "to_vertices", "torch_converter",
           "FLAME_KEYS", "FlameConverter", "FlameModel", "check_flame_arrays", "convert_flame", "flame_lbs",
           "read_flame_model", "rodrigues"]
