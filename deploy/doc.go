// Package deploy holds deployment files; its tests check them.
package deploy
