package ssf

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/auth-platform/tokenservice/rpc/auth"
)

// Paths of the transmitter. package auth's rules table names the same
// paths (public: the metadata; receiver or admin: the others).
const (
	PathMetadata      = "/.well-known/ssf-configuration"
	PathStreams       = "/ssf/streams"
	PathStatus        = "/ssf/status"
	PathAddSubject    = "/ssf/subjects/add"
	PathRemoveSubject = "/ssf/subjects/remove"
	PathVerify        = "/ssf/verify"
	PathPoll          = "/ssf/poll"
)

// Paths returns every path Register serves.
func Paths() []string {
	return []string{PathMetadata, PathStreams, PathStatus, PathAddSubject, PathRemoveSubject, PathVerify, PathPoll}
}

// maxBody bounds a request body of the management and poll API.
const maxBody = 32 << 10

// Register adds the transmitter's paths to mux.
func (s *Service) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET "+PathMetadata, s.serveMetadata)
	mux.HandleFunc(PathStreams, s.serveStreams)
	mux.HandleFunc("GET "+PathStatus, s.handle(func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
		st, err := s.stream(ctx, c, r.URL.Query().Get("stream_id"))
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, statusOf(st), nil
	}))
	mux.HandleFunc("POST "+PathStatus, s.handle(func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
		var req struct {
			StreamID string `json:"stream_id"`
			Status   string `json:"status"`
			Reason   string `json:"reason"`
		}
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		st, err := s.setStatus(ctx, c, req.StreamID, req.Status, req.Reason)
		if err != nil {
			return 0, nil, err
		}
		return http.StatusOK, statusOf(st), nil
	}))
	for path, remove := range map[string]bool{PathAddSubject: false, PathRemoveSubject: true} {
		mux.HandleFunc("POST "+path, s.handle(func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
			var req struct {
				StreamID string          `json:"stream_id"`
				Subject  json.RawMessage `json:"subject"`
			}
			if err := decode(r, &req); err != nil {
				return 0, nil, err
			}
			code := http.StatusOK // SSF 1.0 §8.1.3.2
			if remove {
				code = http.StatusNoContent // §8.1.3.3
			}
			return code, nil, s.setSubject(ctx, c, req.StreamID, req.Subject, remove)
		}))
	}
	mux.HandleFunc("POST "+PathVerify, s.handle(func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
		var req struct {
			StreamID string `json:"stream_id"`
			State    string `json:"state"`
		}
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		return http.StatusNoContent, nil, s.verify(ctx, c, req.StreamID, req.State)
	}))
	mux.HandleFunc("POST "+PathPoll, s.handle(func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
		var req PollRequest
		if err := decode(r, &req); err != nil {
			return 0, nil, err
		}
		resp, err := s.poll(ctx, c, r.URL.Query().Get("stream_id"), req)
		return http.StatusOK, resp, err
	}))
}

func (s *Service) serveStreams(w http.ResponseWriter, r *http.Request) {
	var h func(ctx context.Context, c Caller, r *http.Request) (int, any, error)
	switch r.Method {
	case http.MethodGet:
		h = func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
			if id := r.URL.Query().Get("stream_id"); id != "" {
				st, err := s.stream(ctx, c, id)
				if err != nil {
					return 0, nil, err
				}
				return http.StatusOK, s.configOf(r, st), nil
			}
			all, err := s.streams(ctx, c)
			if err != nil {
				return 0, nil, err
			}
			out := make([]StreamConfig, 0, len(all))
			for _, st := range all {
				out = append(out, s.configOf(r, st))
			}
			return http.StatusOK, out, nil
		}
	case http.MethodPost, http.MethodPatch, http.MethodPut:
		h = func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
			var req StreamRequest
			if err := decode(r, &req); err != nil {
				return 0, nil, err
			}
			var st *record
			var err error
			code := http.StatusOK
			if r.Method == http.MethodPost {
				st, err = s.createStream(ctx, c, req)
				code = http.StatusCreated
			} else {
				st, err = s.updateStream(ctx, c, req, r.Method == http.MethodPut)
			}
			if err != nil {
				return 0, nil, err
			}
			return code, s.configOf(r, st), nil
		}
	case http.MethodDelete:
		h = func(ctx context.Context, c Caller, r *http.Request) (int, any, error) {
			return http.StatusNoContent, nil, s.deleteStream(ctx, c, r.URL.Query().Get("stream_id"))
		}
	default:
		w.Header().Set("Allow", "GET, POST, PATCH, PUT, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "invalid_request", "method not allowed")
		return
	}
	s.handle(h)(w, r)
}

// handle adapts h: the caller from the request's identity, the answer as
// JSON, errors mapped by statusOfError.
func (s *Service) handle(h func(ctx context.Context, c Caller, r *http.Request) (int, any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		code, body, err := h(r.Context(), s.callerOf(r), r)
		if err != nil {
			code, name := statusOfError(err)
			if code == http.StatusInternalServerError {
				s.cfg.Logger.ErrorContext(r.Context(), "ssf: request failed", "path", r.URL.Path, "error", err)
				writeError(w, code, name, "internal error")
				return
			}
			writeError(w, code, name, err.Error())
			return
		}
		if body == nil || code == http.StatusNoContent {
			w.WriteHeader(code)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}
}

// callerOf is the caller of r, from the identity the guard authenticated
// (none: the owner "" of AUTH_MODE=none), with the issuer its request
// was addressed to.
func (s *Service) callerOf(r *http.Request) Caller {
	id, _ := auth.FromContext(r.Context())
	iss, _ := s.cfg.BaseURL(r)
	return Caller{Owner: id.Actor(), Admin: id.HasRole(auth.RoleAdmin), Audiences: id.Audiences, Issuer: iss}
}

// statusOfError is the one mapping of the package's errors to HTTP
// statuses and error names.
func statusOfError(err error) (int, string) {
	switch {
	case errors.Is(err, ErrInvalidRequest):
		return http.StatusBadRequest, "invalid_request"
	case errors.Is(err, ErrStreamNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, ErrTooManyStreams), errors.Is(err, ErrStreamDisabled), errors.Is(err, ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, ErrTooSoon):
		return http.StatusTooManyRequests, "too_many_requests"
	case errors.Is(err, ErrBodyTooLarge):
		return http.StatusRequestEntityTooLarge, "request_too_large"
	case errors.Is(err, ErrNoPublicURL):
		return http.StatusNotFound, "not_found"
	}
	return http.StatusInternalServerError, "server_error"
}

func writeError(w http.ResponseWriter, code int, name, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Err         string `json:"err"`
		Description string `json:"description"`
	}{name, desc})
}

// decode reads a JSON body of at most maxBody bytes into v.
func decode(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) || len(body) > maxBody {
		return fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, maxBody)
	}
	if err != nil {
		return fmt.Errorf("%w: reading the body: %v", ErrInvalidRequest, err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%w: the body is not the expected JSON: %v", ErrInvalidRequest, err)
	}
	return nil
}

// Metadata is the transmitter configuration metadata (SSF 1.0 §7.1).
type Metadata struct {
	SpecVersion              string              `json:"spec_version"`
	Issuer                   string              `json:"issuer"`
	JWKSURI                  string              `json:"jwks_uri"`
	DeliveryMethodsSupported []string            `json:"delivery_methods_supported"`
	ConfigurationEndpoint    string              `json:"configuration_endpoint"`
	StatusEndpoint           string              `json:"status_endpoint"`
	AddSubjectEndpoint       string              `json:"add_subject_endpoint"`
	RemoveSubjectEndpoint    string              `json:"remove_subject_endpoint"`
	VerificationEndpoint     string              `json:"verification_endpoint"`
	CriticalSubjectMembers   []string            `json:"critical_subject_members,omitempty"`
	AuthorizationSchemes     []map[string]string `json:"authorization_schemes"`
	DefaultSubjects          string              `json:"default_subjects"`
}

func (s *Service) serveMetadata(w http.ResponseWriter, r *http.Request) {
	base, ok := s.cfg.BaseURL(r)
	if !ok {
		code, name := statusOfError(ErrNoPublicURL)
		writeError(w, code, name, "PUBLIC_BASE_URL is not set")
		return
	}
	md := Metadata{
		SpecVersion: "1_0", Issuer: base, JWKSURI: base + "/.well-known/jwks.json",
		DeliveryMethodsSupported: []string{MethodPush, MethodPoll},
		ConfigurationEndpoint:    base + PathStreams, StatusEndpoint: base + PathStatus,
		AddSubjectEndpoint: base + PathAddSubject, RemoveSubjectEndpoint: base + PathRemoveSubject,
		VerificationEndpoint: base + PathVerify,
		AuthorizationSchemes: s.schemes(),
		DefaultSubjects:      "ALL",
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_ = json.NewEncoder(w).Encode(md)
}

// configOf is what the API shows of st, with its poll URL made for r.
func (s *Service) configOf(r *http.Request, st *record) StreamConfig {
	base, _ := s.cfg.BaseURL(r)
	return configOf(st, s.issuerOf(st), base+PathPoll+"?stream_id="+st.ID)
}

// streamStatus is the status of a stream (SSF 1.0 §8.1.2.1).
type streamStatus struct {
	StreamID string `json:"stream_id"`
	Status   string `json:"status"`
	Reason   string `json:"reason,omitempty"`
}

func statusOf(st *record) streamStatus {
	return streamStatus{StreamID: st.ID, Status: st.Status, Reason: st.Reason}
}

func (s *Service) schemes() []map[string]string {
	out := make([]map[string]string, 0, len(s.cfg.AuthorizationSchemes))
	for _, urn := range s.cfg.AuthorizationSchemes {
		out = append(out, map[string]string{"spec_urn": urn})
	}
	return out
}
