"""What is here: the NVML probe (`probe`, over the one NVML wrapper `nvml`), live GPU state for the monitor and the
dashboard (`live`), GPU selection and parallel layouts (`gpus`), unified-memory sizing (`unified`) and the host memory
guard (`memguard`).
"""
