# Two images. The full one (the default target) has exactly the tested versions of
# requirements.txt; from PyPI, torch==2.13.0 is the CUDA build, so it runs on a CPU and, with
# --gpus all, on a GPU:
#   docker build -t densefuse .
#   docker run --rm -v "$PWD/data_result:/app/data_result" densefuse                # fuse data_test/
#   docker run --rm --gpus all densefuse python run_infer.py --device cuda
# The deploy one has no torch: numpy, Pillow and onnxruntime (requirements-deploy.txt), and
# fuses with a graph exported by the full install (python -m run_scripts.export_onnx):
#   docker build --target deploy -t densefuse-deploy .
#   docker run --rm -v "$PWD:/work" densefuse-deploy --weights /work/densefuse_add.onnx \
#       --test_path /work/my_pairs --output_path /work/fused
FROM python:3.11-slim AS deploy
WORKDIR /app
COPY requirements-deploy.txt .
RUN pip install --no-cache-dir -r requirements-deploy.txt
# What run_infer.py --backend onnxruntime imports (tests/test_deploy.py checks the list)
COPY configs.py run_infer.py ./
COPY utils/ utils/
COPY data_test/ data_test/
ENTRYPOINT ["python", "run_infer.py", "--backend", "onnxruntime"]

FROM python:3.11-slim AS full
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
CMD ["python", "run_infer.py"]
