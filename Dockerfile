# DenseFuse with exactly the tested versions of requirements.txt. From PyPI, torch==2.13.0 is
# the CUDA build: the image runs on a CPU, and on a GPU with --gpus all.
#   docker build -t densefuse .
#   docker run --rm -v "$PWD/data_result:/app/data_result" densefuse                # fuse data_test/
#   docker run --rm --gpus all densefuse python run_infer.py --device cuda
FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
CMD ["python", "run_infer.py"]
