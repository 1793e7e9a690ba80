# cat-bench on an official PyTorch CUDA runtime image (torch comes with the image).
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /opt/cat-bench
COPY pyproject.toml README.md ./
COPY cat_bench ./cat_bench
COPY methods ./methods
COPY results/paper ./results/paper
RUN pip install --no-cache-dir ".[slurm]"
ENV CAT_BENCH_DATA=/data
VOLUME ["/data", "/runs"]
WORKDIR /runs
ENTRYPOINT ["cat-bench"]
CMD ["--help"]
