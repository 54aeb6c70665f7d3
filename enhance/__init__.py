"""Face-photo enhancement, pure numpy/OpenCV: face detection, 5-point alignment to the FFHQ
template, paste-back with a soft mask, tiled background upsampling, and the pipeline that
ties them to a face restorer (GFPGAN) and a background upsampler (RealESRGAN) given as
batch functions. Imported by the Triton models, the benchmarks and the tests; no torch."""
