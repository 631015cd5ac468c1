package awskms

// Transient exposes the retry rule's classification to the table test of
// errors local-kms cannot produce (throttling, a 5xx).
var Transient = transient
