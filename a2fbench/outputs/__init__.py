"""Outputs: motion -> what people look at and ship.

Takes: motion files of a dataset's head (vertices, or the space's parameters) and a prepared store (faces,
templates, audio, ground truth, converters); a results JSON. Gives: mp4 videos with sound (:mod:`.render`),
ARKit CSV / glTF / OBJ exports (:mod:`.export`) and report pages (:mod:`.report`).

Modules: :mod:`.raster` (our vectorised numpy rasteriser: camera, z-buffer, shading), :mod:`.overlays`
(colour maps, colour bar, text), :mod:`.compose` (frames of a clip: panels, error colouring), :mod:`.video`
(streamed H.264 + AAC mp4 with PyAV), :mod:`.arkit_csv`, :mod:`.gltf`, :mod:`.obj` (the file formats),
:mod:`.heads` (a dataset's faces, templates, converter; INPUT files), :mod:`.topology` (faces where a dataset
ships none), :mod:`.files` (atomic writes), :mod:`.render`, :mod:`.export`, :mod:`.report` (+
:mod:`.figures`, :mod:`.maps`): the commands' bodies. Submodules are imported on demand (matplotlib takes
0.4 s to import, and ``render`` does not need it).
"""

#: ``a2fbench export --format`` choices and the suffix of each one's output (OBJ: a folder). Here, not in
#: :mod:`.export`, so the command line can list them without importing the exporters (0.6 s).
FORMATS = {"arkit-csv": ".csv", "gltf": ".glb", "obj": ""}
