# Triton for the GPU layout: the official container plus what the python pre/post-processing
# models import (numpy < 2, OpenCV headless, PyYAML) and the project's `pcb` package.
ARG TRITON_VERSION=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3
RUN pip install --no-cache-dir "numpy>=1.26,<2" "opencv-python-headless>=4.9,<4.12" "pyyaml>=6"
# pcb_preprocess with decode: gpu (serving/gpu_preprocess.py): nvJPEG through torchvision's
# batched decode_jpeg (0.19+). Pinned apart from constraints.txt: torch 2.15 needs Python
# 3.11 and this container's is 3.10; 2.5.1's CUDA 12.4 wheels run under 24.10's driver stack.
RUN pip install --no-cache-dir "numpy>=1.26,<2" "torch==2.5.1" "torchvision==0.20.1"
COPY pcb /opt/pcb-platform/pcb
COPY serving /opt/pcb-platform/serving
# face_enhance (BLS) runs over enhance/
COPY enhance /opt/pcb-platform/enhance
ENV PYTHONPATH=/opt/pcb-platform
