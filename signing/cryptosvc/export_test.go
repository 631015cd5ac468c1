package cryptosvc

// Transient exposes the retry rule's classification to its table test.
var Transient = transient
