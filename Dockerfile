# DenseFuse on a PyTorch base image (CUDA build; runs on CPU too).
#   docker build -t densefuse .
#   docker run --rm -v "$PWD/data_result:/app/data_result" densefuse                # fuse data_test/
#   docker run --rm --gpus all densefuse python run_infer.py --device cuda
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /app
COPY requirements.txt .
# The base image already has torch; install everything else (the torch pin is for CPU machines).
RUN grep -v '^torch==' requirements.txt > /tmp/req.txt \
    && pip install --no-cache-dir -r /tmp/req.txt
COPY . .
CMD ["python", "run_infer.py"]
