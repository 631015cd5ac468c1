package ctl_test

import "net/http"

func httpClient() *http.Client { return &http.Client{} }
