package scenelink

import (
	"crypto/rand"
	"fmt"

	"github.com/respawn-dev/respawn/internal/secret"
)

// SceneProof is the MAC with which a scene process proves it holds the
// cluster secret: HMAC-SHA256 keyed for secret.PurposeLink over the role
// "scene" and both nonces.
func SceneProof(s *secret.Secret, clientNonce, serverNonce []byte) []byte {
	return s.Sign(secret.PurposeLink, []byte(roleScene), clientNonce, serverNonce)
}

// GatewayProof is the gateway's MAC: the same over the role "gateway".
func GatewayProof(s *secret.Secret, clientNonce, serverNonce []byte) []byte {
	return s.Sign(secret.PurposeLink, []byte(roleGateway), clientNonce, serverNonce)
}

// VerifyScene checks a scene's proof in constant time.
func VerifyScene(s *secret.Secret, mac, clientNonce, serverNonce []byte) bool {
	return s.Verify(secret.PurposeLink, mac, []byte(roleScene), clientNonce, serverNonce)
}

// VerifyGateway checks a gateway's proof in constant time.
func VerifyGateway(s *secret.Secret, mac, clientNonce, serverNonce []byte) bool {
	return s.Verify(secret.PurposeLink, mac, []byte(roleGateway), clientNonce, serverNonce)
}

// NewNonce returns NonceLen random bytes.
func NewNonce() ([]byte, error) {
	b := make([]byte, NonceLen)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("scenelink: nonce: %w", err)
	}
	return b, nil
}
