"""What ``redbatch inspect`` finds: where a request is (``find``), shown as text (``view``)."""
