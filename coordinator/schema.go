package coordinator

import (
	"context"

	tallyv1 "github.com/tallyfl/tally/proto/tally/v1"
)

// Schema implements CoordinatorService: the job's feature count and class
// names, which anyone who can reach the coordinator may read (JobStatus
// tells more). A client checks its file against them before it spends its
// token, so a file the job cannot use fails on the client, naming its
// line, and not after enrolment, key generation and a re-key.
func (s *Service) Schema(context.Context, *tallyv1.SchemaRequest) (*tallyv1.SchemaResponse, error) {
	resp := &tallyv1.SchemaResponse{JobId: s.job.ID, Features: int32(s.job.Data.Features), ClassNames: s.job.Data.ClassNames}
	if m := s.job.Pinned; m != nil {
		// The file form; its fingerprint covers the content and the
		// signature, not the JSON layout, so the client's check holds.
		b, err := m.Marshal()
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Manifest = b
	}
	return resp, nil
}
