"""What is here: the NVML probe (`probe`, over the one NVML wrapper `nvml`), GPU selection and parallel layouts
(`gpus`), unified-memory sizing (`unified`) and the host memory guard (`memguard`).
"""
