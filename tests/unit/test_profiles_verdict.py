from spark_tui.core.catalog.profiles import catalog, nvfp4_verdict


def test_verdict_per_device_family():
    cat = catalog()
    assert nvfp4_verdict(cat.device("dgx-spark"))[0] == "native NVFP4"
    assert nvfp4_verdict(cat.device("b200"))[0] == "native NVFP4"
    v, why = nvfp4_verdict(cat.device("h100"))
    assert v == "fallback" and "W4A16" in why and "(" in why  # the reason names its source
    v, why = nvfp4_verdict(cat.device("a100"))
    assert v == "unsupported" and "sm_80" in why
