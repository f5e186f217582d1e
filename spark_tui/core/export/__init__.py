"""The plan as files: the renderers per format (`formats`: bash, docker, compose, systemd, k8s, ray) and the one
writer that touches the disk (`files`: atomic, all or nothing, never onto a device, FIFO, directory or link).
"""
