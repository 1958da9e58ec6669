"""Face geometry of a stream: landmarks, smoothing, FFHQ alignment, paste-back, tracks and their per-face memory.

Submodules (imported on demand, nothing heavy here): `landmarks` (MediaPipe FaceMesh), `smoothing` (One Euro),
`align` (FFHQ quad -> one affine warp), `paste` (inverse warp with a feathered mask), `tracking` (one
`FaceTracker` per stream: track identity and the memory that travels with each track).
"""
